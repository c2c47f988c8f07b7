"""What ``compare`` asks and trains on: the bundled tasks or the user's files, validated first.

Questions (``--questions``, or the bundled knowledge base's) are split into *trained* and
*held-out* ones, separately for answerable and unanswerable questions so both splits hold some
of each. The fine-tunes are trained on the trained split only; every arm is asked held-out
questions (what generalises), and the fine-tuned arms also trained ones (what they memorised).
A form task (``--train`` with ``--schema``, or the bundled orders) is split the same way.

Everything here reads and checks files before any model or store is loaded, so a bad line
fails in a second with its ``file:line``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ConfigError, DataError
from tuneforge.evaluate.arms import COMBINED, JSON, KNOWLEDGE, Task
from tuneforge.evaluate.runner import QA_SYSTEM_PROMPT, load_eval_data
from tuneforge.rag.qa_records import QARecord
from tuneforge.rag.replies import REFUSAL


@dataclass
class QuestionSplit:
    """Questions split for training and evaluation.

    Attributes:
        trained: the questions the fine-tunes are trained on.
        held_out: the questions no fine-tune saw.
    """

    trained: list[QARecord]
    held_out: list[QARecord]


def split_questions(records: list[QARecord], holdout: float, seed: int = 0) -> QuestionSplit:
    """Split ``records`` into trained and held-out, answerable and unanswerable alike.

    Each kind is shuffled (seeded) and ``round(holdout * count)`` of it held out, at least one
    of each kind with two or more questions, so both splits hold some of each.

    Raises:
        ConfigError: ``holdout`` is not in (0, 1).
        DataError: fewer than two answerable questions (nothing to train and hold out).
    """
    if not 0 < holdout < 1:
        raise ConfigError(f"--holdout must be in (0, 1), got {holdout}")
    rng = random.Random(seed)
    trained: list[QARecord] = []
    held_out: list[QARecord] = []
    for answerable in (True, False):
        group = [record for record in records if record.answerable == answerable]
        rng.shuffle(group)
        count = min(max(round(holdout * len(group)), 1), len(group) - 1) if len(group) > 1 else 0
        held_out += group[:count]
        trained += group[count:]
    if not any(r.answerable for r in held_out) or not any(r.answerable for r in trained):
        raise DataError(
            f"{len(records)} questions hold too few answerable ones to train on some and hold "
            "out others; give at least 2 (20 or more to measure anything)"
        )
    return QuestionSplit(trained, held_out)


def spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (all of them if fewer)."""
    if count <= 0:
        return []
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def pick_questions(records: list[QARecord], answerable: int, unanswerable: int) -> list[QARecord]:
    """Up to ``answerable`` answerable then ``unanswerable`` unanswerable records, spread."""
    return spread([r for r in records if r.answerable], answerable) + spread(
        [r for r in records if not r.answerable], unanswerable
    )


def qa_training_records(records: list[QARecord], json_system: str | None = None) -> list[dict]:
    """Questions and answers as chat training pairs, with the system prompts used at test time.

    Each record gives a plain pair (the answer, or the refusal for an unanswerable question);
    with ``json_system`` also the same pair in the combined task's JSON shape.
    """
    from tuneforge.tasks.sourced_answers import plain_target

    pairs = []
    for record in records:
        reply = f"{record.answers[0]}." if record.answerable else REFUSAL
        pairs.append(_chat(QA_SYSTEM_PROMPT, record.question, reply))
        if json_system is not None:
            pairs.append(_chat(json_system, record.question, plain_target(record)))
    return pairs


def _chat(system: str, user: str, assistant: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


@dataclass
class FormTask:
    """A strict-JSON task: training records, held-out items and the schema.

    Attributes:
        train: chat ``messages`` records to fine-tune on.
        test: evaluation items (``prompt``, ``system``, ``expected``).
        schema: the JSON schema every reply must satisfy.
        examples: ``Request: ... JSON: ...`` texts of training records, retrieved as
            demonstrations by the arms with retrieval.
        preference: preference pairs (``prompt``, ``chosen``, ``rejected``) derived from the
            training records, for the DPO fine-tune after the supervised one; None: the task
            has none (its DPO arm is skipped).
    """

    train: list[dict]
    test: list[dict]
    schema: Mapping
    examples: list[str]
    preference: Path | None = None


def _example_text(item: dict) -> str:
    return f"Request: {item['prompt']}\nJSON: {json.dumps(item['expected'], ensure_ascii=False)}"


def bundled_form_task(test_prompts: int, examples: int) -> FormTask:
    """The bundled orders task (``tuneforge.tasks.json_orders``)."""
    from tuneforge.tasks import json_orders

    train = [json.loads(line) for line in json_orders.asset_path("train").read_text().splitlines()]
    test = [
        {"prompt": r["prompt"], "system": r["system"], "expected": r["expected"]}
        for r in json_orders.load_records("test")[:test_prompts]
    ]
    texts = [
        f"Request: {r['prompt']}\nJSON: {r['answer']}"
        for r in json_orders.load_records("train")[:examples]
    ]
    return FormTask(train, test, json_orders.SCHEMA, texts, json_orders.asset_path("preference"))


def read_schema(path: Path | str) -> dict:
    """A JSON schema file.

    Raises:
        DataError: unreadable, not JSON, or not a valid JSON schema (2020-12).
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the JSON schema ({err})") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        raise DataError(f"{path}: not a valid JSON schema ({err.message})") from err
    return schema


def read_form_task(
    path: Path | str, schema_path: Path | str, holdout: float, seed: int, test_prompts: int
) -> FormTask:
    """The user's form task: chat records whose last assistant turn is a JSON object.

    Every reference reply is checked against the schema; ``holdout`` of the records (seeded) are
    held out for evaluation (at most ``test_prompts`` asked), the rest trained on and retrieved
    as demonstrations.

    Raises:
        DataError: an unreadable file, a record without a final assistant JSON object, or a
            reference that violates the schema (``file:line``).
    """
    from tuneforge.evaluate.metrics import schema_errors

    schema = read_schema(schema_path)
    path = Path(path)
    items = load_eval_data(path)  # file:line errors for lines that are not JSON objects
    numbered = [
        (number, json.loads(line))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip()
    ]
    records = [record for _, record in numbered]
    for (number, _), item in zip(numbered, items, strict=True):
        where = f"{path}:{number}"
        if "expected" not in item or not item.get("prompt"):
            raise DataError(
                f"{where}: a form-task record is a chat whose last turn is the assistant's JSON "
                'object: {"messages": [{"role": "user", ...}, {"role": "assistant", "content": '
                '"{...}"}]}'
            )
        errors = schema_errors(item["expected"], schema)
        if errors:
            raise DataError(f"{where}: the reference reply violates {schema_path}: {errors[0]}")
    if len(items) < 2:
        raise DataError(f"{path}: need at least 2 records to train on some and hold out others")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    count = min(max(round(holdout * len(order)), 1), len(order) - 1)
    test = [
        {"prompt": items[i]["prompt"], "system": items[i].get("system"), **_expected(items[i])}
        for i in order[:count]
    ][:test_prompts]
    trained = order[count:]
    return FormTask(
        train=[records[i] for i in trained],
        test=test,
        schema=schema,
        examples=[_example_text(items[i]) for i in trained],
    )


def _expected(item: dict) -> dict:
    return {"expected": item["expected"], "history": item.get("history") or []}


@dataclass
class CompareInputs:
    """The checked inputs of one comparison.

    Attributes:
        records: the questions (QA records).
        form: the form task, or None when there is none (the user gave no ``--train``).
        docs: the user's documents; None for the bundled knowledge base.
        description: one line for the report naming what was compared.
    """

    records: list[QARecord]
    form: FormTask | None
    docs: Path | None
    description: str


def read_compare_inputs(
    json_prompts: int,
    json_examples: int,
    docs: Path | str | None = None,
    questions: Path | str | None = None,
    train: Path | str | None = None,
    schema: Path | str | None = None,
    holdout: float = 0.3,
    seed: int = 0,
) -> tuple[CompareInputs, list[Task]]:
    """Read and check every input file of ``compare``; the tasks to run on them.

    No data option: the bundled tasks (knowledge, json, combined). Otherwise ``docs`` and
    ``questions`` (the knowledge task), plus ``train`` with ``schema`` (the form task).

    Args:
        json_prompts: held-out form-task prompts to ask.
        json_examples: bundled training examples to retrieve as demonstrations.
        docs, questions, train, schema: the user's files (see ``tuneforge compare --help``).
        holdout: share of the form task's records held out.
        seed: seed of the form task's split.

    Raises:
        ConfigError: a data option without its partner, or documents that do not exist.
        DataError: an invalid question or form-task file (``file:line``).
    """
    from tuneforge.rag.qa_records import read_qa_records
    from tuneforge.tasks.knowledge_base import questions_path

    if all(value is None for value in (docs, questions, train, schema)):
        bundled = CompareInputs(
            read_qa_records(questions_path()),
            bundled_form_task(json_prompts, json_examples),
            None,
            "the bundled tasks",
        )
        return bundled, [KNOWLEDGE, JSON, COMBINED]
    if docs is None or questions is None:
        raise ConfigError(
            "compare on your data needs both --docs DIR and --questions FILE (JSONL of "
            '{"question", "answer", "source"}); --train FILE --schema FILE add a form task'
        )
    if (train is None) != (schema is None):
        raise ConfigError("--train and --schema go together: a form task needs its JSON schema")
    docs = Path(docs)
    if not docs.exists():
        raise ConfigError(f"--docs {docs}: no such file or folder")
    form = read_form_task(train, schema, holdout, seed, json_prompts) if train else None
    description = f"documents {docs}, questions {questions}" + (
        f", form task {train} (schema {schema})" if train else ""
    )
    tasks = [KNOWLEDGE, JSON] if form else [KNOWLEDGE]
    return CompareInputs(read_qa_records(questions), form, docs, description), tasks
