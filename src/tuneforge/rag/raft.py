"""Retrieval-augmented fine-tuning (RAFT): train on the prompts retrieval builds at inference.

Zhang et al. 2024, "RAFT: Adapting Language Model to Domain Specific RAG". A model fine-tuned on
plain question/answer pairs and then given retrieved sources reads them worse than the base
model: it never saw such a prompt. RAFT trains on them, with the answer's document (the
*oracle*) among distractors in a share of examples and left out in the others, so the model
learns to find and cite the source that holds the answer, and to refuse when none does.

Each example here is built from a :mod:`tuneforge.rag.qa_records` record and a store:

1. The question's top-k hits are retrieved from the store exactly as ``rag ask`` retrieves them.
2. The oracle chunk is the chunk of the record's source that holds the answer text (the best
   matching chunk of that source when none does; without a source, a retrieved chunk holding
   the answer).
3. In a share ``oracle_share`` of the answerable examples (RAFT's P, 0.8 by default) the oracle
   is guaranteed among the hits (it replaces the weakest hit if retrieval missed it); in the
   others every chunk holding the answer is removed and the next hits fill in. Unanswerable
   questions keep their hits as retrieved.
4. The hits are shuffled (seeded), so the oracle's position does not give it away.
5. The prompt is :func:`tuneforge.rag.build_rag_messages` of those hits: the function ``rag
   ask``, eval, compare and the server build theirs with, so the two cannot drift apart.
6. The target is the answer with the oracle's citation ``[n]`` (``n`` = its position after
   shuffling), in a named :data:`TARGET_FORMATS` shape; or the house refusal when the oracle
   was removed or the question is unanswerable.

An example whose hits fall under the relevance rule (nothing similar enough to the question) is
dropped and counted: at inference such a question gets the refusal without calling the model,
so there is nothing to learn. The result is chat ``messages`` records that ``tuneforge train``
reads as they are.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.rag.prompting import (
    DEFAULT_PROMPT_FORMAT,
    MIN_SIMILARITY,
    build_rag_messages,
    relevant_hits,
    resolve_prompt_format,
)
from tuneforge.rag.qa_records import QARecord, read_qa_records, resolve_sources
from tuneforge.rag.replies import REFUSAL
from tuneforge.rag.retrieval import MODES, Hit
from tuneforge.rag.vector_store import DocumentRecord

# Hits retrieved beyond top_k, to fill in for the chunks removed with the oracle.
_SPARE_HITS = 6


def _cited(answer: str | None, citation: int | None) -> str:
    return REFUSAL if answer is None else f"{answer} [{citation}]"


def _json_answer(answer: str | None, citation: int | None) -> str:
    value = (
        {"answer": REFUSAL, "source": None}
        if answer is None
        else {"answer": answer, "source": f"[{citation}]"}
    )
    return json.dumps(value, ensure_ascii=False)


TARGET_FORMATS: dict[str, Callable[[str | None, int | None], str]] = {
    "cited": _cited,
    "json": _json_answer,
}
"""How an answer and its citation become the assistant's reply (``None`` answer: a refusal).

``cited``: ``19 months [2]`` / ``I don't know.``;
``json``: ``{"answer": "19 months", "source": "[2]"}`` / ``{"answer": "I don't know.",
"source": null}`` (valid under :data:`JSON_ANSWER_SCHEMA`; the ``[n]`` inside is read by
``tuneforge.rag.parse_citations`` like any citation)."""

JSON_ANSWER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 1},
        "source": {"anyOf": [{"type": "string", "pattern": r"^\[[0-9]+\]$"}, {"type": "null"}]},
    },
    "required": ["answer", "source"],
    "additionalProperties": False,
}
"""The JSON shape of the ``json`` target: the answer, and the cited source ``[n]`` or null."""


@dataclass(frozen=True)
class RaftSettings:
    """How RAFT examples are built; every field checked where it is set.

    Attributes:
        top_k: hits shown per prompt: the ``top_k`` retrieval uses at inference.
        oracle_share: share of answerable examples that keep the oracle chunk (RAFT's P), in
            [0, 1]; the others have every chunk holding the answer removed, target: refusal.
        examples_per_question: examples built per question, each with its own draw of the
            oracle's fate and its own shuffle.
        mode: retrieval mode, as at inference: ``dense``, ``bm25`` or ``hybrid``.
        min_similarity: the relevance rule's threshold, as at inference.
        prompt_format: the prompt format (``tuneforge.rag.PROMPT_FORMATS``) the model will be
            asked in.
        target_format: the reply's shape, a key of ``TARGET_FORMATS``: ``cited`` (answer
            and ``[n]``) or ``json`` (``{"answer", "source"}``).
        client_system: system text a client adds to every request (e.g. a JSON instruction);
            it is appended to the format's instruction exactly as at inference.
        shuffle: shuffle each example's hits (off only to compare prompts in tests).
        seed: seed of the oracle draws and the shuffles.
    """

    top_k: int = 3
    oracle_share: float = 0.8
    examples_per_question: int = 1
    mode: str = "hybrid"
    min_similarity: float = MIN_SIMILARITY
    prompt_format: str = DEFAULT_PROMPT_FORMAT
    target_format: str = "cited"
    client_system: str | None = None
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ConfigError(f"raft.{name} {rule}; got {getattr(self, name)!r}")

        check(_is_int(self.top_k) and self.top_k >= 1, "top_k", "must be an integer >= 1")
        check(
            isinstance(self.oracle_share, int | float) and 0 <= self.oracle_share <= 1,
            "oracle_share",
            "must be in [0, 1]",
        )
        check(
            _is_int(self.examples_per_question) and self.examples_per_question >= 1,
            "examples_per_question",
            "must be an integer >= 1",
        )
        check(self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}")
        check(self.target_format in TARGET_FORMATS, "target_format", _one_of(TARGET_FORMATS))
        check(_is_int(self.seed) and self.seed >= 0, "seed", "must be an integer >= 0")
        resolve_prompt_format(self.prompt_format)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(names) -> str:
    return f"must be one of {', '.join(names)}"


@dataclass
class RaftExample:
    """One training example and how it was made.

    Attributes:
        messages: the prompt (``build_rag_messages``) and the target as the last,
            ``assistant``, message.
        kind: ``oracle_kept``, ``oracle_removed`` or ``unanswerable``.
        hits: the hits shown, in prompt order (``[n]`` is ``hits[n-1]``).
        citation: the oracle's number ``[n]`` in the prompt (None when it is not shown).
        where: ``file:line`` of the question's record.
    """

    messages: list[dict]
    kind: str
    hits: list[Hit]
    citation: int | None
    where: str


@dataclass
class RaftReport:
    """What building the examples did.

    Attributes:
        questions: records read.
        examples: examples built.
        oracle_kept: examples showing the oracle, target: the cited answer.
        oracle_removed: answerable examples with the chunks holding the answer removed,
            target: the refusal.
        unanswerable: examples of unanswerable questions, target: the refusal.
        oracle_retrieved: answerable examples whose oracle was among the ``top_k`` hits as
            retrieved (before it was guaranteed or removed): retrieval's hit rate on the data.
        dropped: one ``file:line: reason`` per example not built.
        settings: the settings used.
    """

    questions: int = 0
    examples: int = 0
    oracle_kept: int = 0
    oracle_removed: int = 0
    unanswerable: int = 0
    oracle_retrieved: int = 0
    dropped: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line of counts."""
        answerable = self.oracle_kept + self.oracle_removed
        retrieved = f"{self.oracle_retrieved}/{answerable}" if answerable else "n/a"
        return (
            f"{self.examples} RAFT examples from {self.questions} questions: oracle kept "
            f"{self.oracle_kept}, oracle removed {self.oracle_removed}, unanswerable "
            f"{self.unanswerable}, dropped {len(self.dropped)}; oracle among the retrieved "
            f"top {self.settings.get('top_k')}: {retrieved}"
        )


def _normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def holds_answer(text: str, answers: tuple[str, ...] | list[str]) -> str | None:
    """The first accepted answer ``text`` states (case and spacing aside, on word boundaries,
    so ``6`` is not found in ``16``), or None."""
    haystack = _normalized(text)
    for answer in answers:
        needle = _normalized(answer)
        if needle and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack):
            return answer
    return None


def find_oracle(
    record: QARecord, store, documents: dict[str, DocumentRecord], retrieved: list[Hit]
) -> Hit | None:
    """The chunk that holds ``record``'s answer.

    With sources: the chunk of the first source (then the next) that states the answer, the
    one most similar to the question when several do; when none does, the first source's chunk
    most similar to the question. Without a source: the best retrieved chunk stating the answer,
    else the best chunk stating it among a full-text search for the answer.

    Args:
        record: an answerable record.
        store: the ``RagStore`` (only its ``search`` is used).
        documents: named source -> stored document (:func:`resolve_sources`).
        retrieved: the question's hits as retrieved.

    Returns:
        the oracle hit, or None when no source is named and no chunk found states the answer.
    """
    best_of_first: Hit | None = None
    for named in record.sources:
        doc = documents[named]
        chunks = store.search(
            record.question, top_k=max(doc.chunks, 1), mode="dense", source_filter=doc.source
        )
        if best_of_first is None and chunks:
            best_of_first = chunks[0]
        for chunk in chunks:
            if holds_answer(chunk.text, record.answers):
                return chunk
    if best_of_first is not None:
        return best_of_first
    for hit in retrieved:
        if holds_answer(hit.text, record.answers):
            return hit
    by_words = store.search(record.answers[0], top_k=_SPARE_HITS * 2, mode="bm25")
    return next((hit for hit in by_words if holds_answer(hit.text, record.answers)), None)


def _draw_kept(count: int, share: float, rng: random.Random) -> set[int]:
    """Exactly ``round(share * count)`` of ``count`` answerable examples keep the oracle."""
    return set(rng.sample(range(count), round(share * count)))


def build_raft_examples(
    records: list[QARecord], store, settings: RaftSettings | None = None
) -> tuple[list[RaftExample], RaftReport]:
    """RAFT training examples for ``records`` over ``store``.

    Args:
        records: validated QA records (:func:`tuneforge.rag.qa_records.read_qa_records`).
        store: a ``RagStore`` holding the documents the records name.
        settings: how to build (default :class:`RaftSettings`).

    Returns:
        the examples, in record order (each record's ``examples_per_question`` together), and
        the report.

    Raises:
        DataError: a record names a source the store does not hold (``file:line``).
    """
    settings = settings or RaftSettings()
    documents = resolve_sources(records, store.documents())
    rng = random.Random(settings.seed)
    plan = [(record, copy) for record in records for copy in range(settings.examples_per_question)]
    answerable = [index for index, (record, _) in enumerate(plan) if record.answerable]
    kept = {answerable[i] for i in _draw_kept(len(answerable), settings.oracle_share, rng)}
    report = RaftReport(questions=len(records), settings=asdict(settings))
    examples: list[RaftExample] = []
    retrieved_for: dict[str, list[Hit]] = {}
    oracle_for: dict[str, Hit | None] = {}
    for index, (record, _) in enumerate(plan):
        key = record.where
        if key not in retrieved_for:
            retrieved_for[key] = store.search(
                record.question, top_k=settings.top_k + _SPARE_HITS, mode=settings.mode
            )
            oracle_for[key] = (
                find_oracle(record, store, documents, retrieved_for[key])
                if record.answerable
                else None
            )
        retrieved, oracle = retrieved_for[key], oracle_for[key]
        if record.answerable and oracle is None:
            report.dropped.append(
                f"{record.where}: no chunk states the answer {record.answers[0]!r}; name the "
                "file that holds it in 'source'"
            )
            continue
        hits, kind = _choose_hits(record, retrieved, oracle, index in kept, settings.top_k)
        if record.answerable:
            top = {hit.chunk_id for hit in retrieved[: settings.top_k]}
            report.oracle_retrieved += oracle.chunk_id in top
        if not relevant_hits(hits, settings.min_similarity):
            report.dropped.append(
                f"{record.where}: no hit reaches the relevance threshold "
                f"{settings.min_similarity}: inference answers the refusal without the model"
            )
            continue
        if settings.shuffle:
            rng.shuffle(hits)
        citation = None
        if kind == "oracle_kept":
            citation = 1 + [hit.chunk_id for hit in hits].index(oracle.chunk_id)
        answer = holds_answer(oracle.text, record.answers) if kind == "oracle_kept" else None
        if kind == "oracle_kept" and answer is None:
            answer = record.answers[0]  # the source paraphrases it: teach the record's answer
        prompt = build_rag_messages(
            record.question,
            hits,
            prompt_format=settings.prompt_format,
            client_system=settings.client_system,
        )
        target = TARGET_FORMATS[settings.target_format](answer, citation)
        examples.append(
            RaftExample(
                messages=[*prompt, {"role": "assistant", "content": target}],
                kind=kind,
                hits=hits,
                citation=citation,
                where=record.where,
            )
        )
        setattr(report, kind, getattr(report, kind) + 1)
    report.examples = len(examples)
    return examples, report


def _choose_hits(
    record: QARecord, retrieved: list[Hit], oracle: Hit | None, keep: bool, top_k: int
) -> tuple[list[Hit], str]:
    """The hits to show (before shuffling) and the example's kind."""
    if not record.answerable:
        return list(retrieved[:top_k]), "unanswerable"
    if keep:
        hits = list(retrieved[:top_k])
        if oracle.chunk_id not in {hit.chunk_id for hit in hits}:
            hits = [*hits[: top_k - 1], oracle]
        return hits, "oracle_kept"
    distractors = [
        hit
        for hit in retrieved
        if hit.chunk_id != oracle.chunk_id and not holds_answer(hit.text, record.answers)
    ]
    return distractors[:top_k], "oracle_removed"


def write_raft_data(path: Path | str, examples: list[RaftExample]) -> Path:
    """Write the examples as chat ``messages`` JSONL (what ``tuneforge train`` reads), atomically."""
    from tuneforge.atomic import write_text

    path = Path(path)
    write_text(
        path,
        "".join(json.dumps({"messages": e.messages}, ensure_ascii=False) + "\n" for e in examples),
    )
    return path


def build_raft_data(
    questions: Path | str | list[QARecord],
    store,
    out: Path | str,
    settings: RaftSettings | None = None,
) -> RaftReport:
    """Read questions, build RAFT examples over a store, write them and a report: one call.

    Writes ``out`` (chat ``messages`` JSONL) and ``out`` with the suffix ``.report.json`` (the
    :class:`RaftReport`), both atomically.

    Args:
        questions: a QA JSONL file (:mod:`tuneforge.rag.qa_records`) or records already read.
        store: a ``RagStore`` or its folder.
        out: the JSONL file to write.
        settings: how to build (default :class:`RaftSettings`).

    Raises:
        DataError: an invalid question file, a source the store does not hold, or no example
            left to train on.
        StoreError: ``store`` is a folder that holds no store.
    """
    from tuneforge.atomic import write_json
    from tuneforge.errors import DataError

    records = questions if isinstance(questions, list) else read_qa_records(questions)
    if isinstance(store, str | Path):
        from tuneforge.rag.document_store import RagStore

        store = RagStore.open(store)
    examples, report = build_raft_examples(records, store, settings)
    if not examples:
        reasons = "\n".join(report.dropped[:5])
        raise DataError(f"no RAFT example could be built ({report.summary()}):\n{reasons}")
    out = write_raft_data(out, examples)
    write_json(out.with_suffix(".report.json"), asdict(report))
    return report


# -- the prompt format an adapter was trained with ------------------------------------------------

PROMPT_RECORD = "rag_prompt.json"
"""File in an adapter (or model) folder trained on RAFT data: how it expects to be prompted."""

_RECORDED = ("prompt_format", "target_format", "client_system", "top_k", "mode", "min_similarity")


def write_prompt_record(folder: Path | str, settings: RaftSettings, store: Path | str) -> Path:
    """Record in a trained folder the retrieval prompt its examples were built with.

    ``rag ask --adapter`` and ``eval --adapter --store`` read it back (:func:`trained_prompt`)
    and ask in the same format, so a model is never prompted in a shape it was not trained on.

    Args:
        folder: the adapter (or full model) folder the run saved.
        settings: the RAFT settings the training examples were built with.
        store: the store they were built over (recorded for information: its facts may change).

    Returns:
        the file written, ``folder / PROMPT_RECORD``.
    """
    from tuneforge.atomic import write_json

    values = asdict(settings)
    record = {"format": 1, **{name: values[name] for name in _RECORDED}}
    record["store"] = str(Path(store).resolve())
    path = Path(folder) / PROMPT_RECORD
    write_json(path, record)
    return path


def trained_prompt(folder: Path | str | None) -> dict | None:
    """The retrieval prompt a folder was trained with (:func:`write_prompt_record`), or None.

    Args:
        folder: an adapter or model folder; None (no adapter) gives None.

    Returns:
        the record's fields (``prompt_format``, ``client_system``, ``top_k``, ...), or None when
        the folder was not trained on RAFT data.

    Raises:
        ConfigError: the file is unreadable, not a record of this format, or names an unknown
            prompt format.
    """
    if folder is None or not (Path(folder) / PROMPT_RECORD).is_file():
        return None
    path = Path(folder) / PROMPT_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the trained prompt record ({err})") from err
    if not isinstance(record, dict) or record.get("format") != 1:
        raise ConfigError(f"{path}: not a tuneforge prompt record (format 1); retrain or delete it")
    missing = [name for name in _RECORDED if name not in record]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)}; retrain or delete the file")
    resolve_prompt_format(record["prompt_format"])
    return record
