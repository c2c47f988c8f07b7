"""Question/answer records about a document store: read, validated with ``file:line`` errors.

One JSON object a line::

    {"question": "How long is the warranty?", "answer": "4 years", "source": "warranty.md"}
    {"question": "Who is the head of marketing?", "answer": null}

- ``question`` (required): the question, as a user would ask it.
- ``answer`` (required): the short answer as the documents state it; ``null`` when no document
  answers the question (the system must then refuse).
- ``source`` (optional): the file that holds the answer, as a name (``warranty.md``), a path
  under the ingested folder (``policies/warranty.md``) or an absolute path.
- ``sources`` (optional): every file that states the answer (``source`` first when both given).
- ``aliases`` (optional): other accepted spellings of the answer (``["4-year"]``).
- ``answerable`` (optional): must agree with ``answer`` (false exactly when it is null).
- ``id`` (optional): a name for the question in reports.

The file is checked line by line before anything is loaded (:func:`read_qa_records`); whether
each named source is in a store is checked against the store's document list
(:func:`resolve_sources`), still before any model loads. RAFT training data
(:mod:`tuneforge.rag.raft`) and ``tuneforge compare --questions`` read this format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import DataError
from tuneforge.rag.vector_store import DocumentRecord

QA_FIELDS = ("question", "answer", "source", "sources", "aliases", "answerable", "id")
"""Every field a QA record may have."""


@dataclass(frozen=True)
class QARecord:
    """One validated question.

    Attributes:
        question: the question text (surrounding whitespace dropped).
        answers: the accepted answers, the record's ``answer`` first, then its ``aliases``;
            empty when no document answers the question.
        sources: the files that hold the answer, as the record names them (``source`` first).
        where: ``file:line`` of the record, for messages.
        id: the record's ``id`` (None when not given).
    """

    question: str
    answers: tuple[str, ...]
    sources: tuple[str, ...]
    where: str
    id: str | None = None

    @property
    def answerable(self) -> bool:
        """True when some document answers the question."""
        return bool(self.answers)

    def eval_item(self) -> dict:
        """The record as an evaluation item (``tuneforge.evaluate``'s QA shape)."""
        return {
            "id": self.id or self.where,
            "question": self.question,
            "answer": list(self.answers) if self.answers else None,
            "source": list(self.sources),
            "answerable": self.answerable,
        }


def _fail(where: str, problem: str) -> DataError:
    return DataError(f"{where}: {problem}")


def _strings(value, where: str, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(where, f"field {name!r} must be a list of non-empty strings, got {value!r}")
    return [v.strip() for v in value]


def parse_qa_record(data: object, where: str) -> QARecord:
    """Validate one decoded record.

    Args:
        data: the decoded JSON value of one line.
        where: ``file:line`` for messages.

    Raises:
        DataError: not an object, an unknown or missing field, a wrong type, or fields that
            contradict each other (an unanswerable question with a source).
    """
    if not isinstance(data, dict):
        raise _fail(where, f"expected a JSON object, got {type(data).__name__}")
    unknown = [key for key in data if key not in QA_FIELDS]
    if unknown:
        raise _fail(
            where,
            f"unknown field {unknown[0]!r}; a QA record has the fields {', '.join(QA_FIELDS)}",
        )
    for required in ("question", "answer"):
        if required not in data:
            raise _fail(
                where,
                f"missing field {required!r}; write "
                '{"question": ..., "answer": ... or null, "source": FILE}',
            )
    question = data["question"]
    if not isinstance(question, str) or not question.strip():
        raise _fail(where, f"field 'question' must be a non-empty string, got {question!r}")
    answer = data["answer"]
    if answer is not None and (not isinstance(answer, str) or not answer.strip()):
        raise _fail(
            where,
            f"field 'answer' must be a non-empty string, or null when no document answers the "
            f"question; got {answer!r}",
        )
    aliases = _strings(data.get("aliases") or [], where, "aliases")
    sources = _strings(data.get("sources") or [], where, "sources")
    source = data.get("source")
    if source is not None:
        if not isinstance(source, str) or not source.strip():
            raise _fail(where, f"field 'source' must be a file name or path, got {source!r}")
        sources = [source.strip(), *(s for s in sources if s != source.strip())]
    answerable = data.get("answerable", answer is not None)
    if not isinstance(answerable, bool) or answerable != (answer is not None):
        raise _fail(
            where,
            f"field 'answerable' is {answerable!r} but 'answer' is {answer!r}; an unanswerable "
            "question has \"answer\": null (and 'answerable' may then only be false)",
        )
    if answer is None and (sources or aliases):
        raise _fail(
            where,
            "the answer is null (no document answers the question) but the record names "
            f"{'a source' if sources else 'aliases'}; drop it, or give the answer",
        )
    record_id = data.get("id")
    if record_id is not None and not isinstance(record_id, str | int):
        raise _fail(where, f"field 'id' must be a string or a number, got {record_id!r}")
    answers = tuple(dict.fromkeys([answer.strip(), *aliases])) if answer is not None else ()
    return QARecord(
        question=question.strip(),
        answers=answers,
        sources=tuple(sources),
        where=where,
        id=None if record_id is None else str(record_id),
    )


def read_qa_records(path: Path | str) -> list[QARecord]:
    """Read and validate a JSONL file of QA records.

    Raises:
        DataError: a missing or empty file, invalid JSON, an invalid record, or a question
            asked twice (it could land in both a training and a held-out split); the message
            names ``file:line``.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file; pass a JSONL file of questions") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the file ({err})") from err
    records: list[QARecord] = []
    first_line: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise _fail(where, f"invalid JSON ({err.msg}); fix or remove the line") from err
        record = parse_qa_record(data, where)
        key = " ".join(record.question.casefold().split())
        if key in first_line:
            raise _fail(where, f"the question is asked twice (first at {first_line[key]})")
        first_line[key] = where
        records.append(record)
    if not records:
        raise DataError(f"{path}: no questions; add one JSON object per line")
    return records


def _matches(stored: str, named: str) -> bool:
    """A stored document's absolute path matches a source named by file name, path tail or path."""
    stored = stored.replace("\\", "/")
    named = named.replace("\\", "/").removeprefix("./")
    return stored == named or stored.endswith("/" + named)


def resolve_sources(
    records: list[QARecord], documents: list[DocumentRecord]
) -> dict[str, DocumentRecord]:
    """The stored document behind every source the records name.

    Args:
        records: validated records.
        documents: the store's documents (``RagStore.documents()``).

    Returns:
        source as named in a record -> its document.

    Raises:
        DataError: a source matches no document, or several (``file:line`` of the first record
            naming it, and what the store holds).
    """
    resolved: dict[str, DocumentRecord] = {}
    for record in records:
        for named in record.sources:
            if named in resolved:
                continue
            found = [doc for doc in documents if _matches(doc.source, named)]
            if not found:
                names = ", ".join(sorted(Path(doc.source).name for doc in documents)[:12])
                raise _fail(
                    record.where,
                    f"source {named!r} is not in the store (it holds {len(documents)} "
                    f"documents: {names}{', ...' if len(documents) > 12 else ''}); fix the name "
                    "or ingest the file",
                )
            if len(found) > 1:
                paths = ", ".join(doc.source for doc in found[:3])
                raise _fail(
                    record.where,
                    f"source {named!r} matches {len(found)} documents ({paths}); write more of "
                    "its path",
                )
            resolved[named] = found[0]
    return resolved
