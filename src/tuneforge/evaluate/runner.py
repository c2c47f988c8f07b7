"""Run metrics over a data set: ``evaluate(model, tokenizer, data, metrics, store=None)``.

A data set is a list of items (dicts, one JSONL line each). Which fields an item has decides
what it is scored on:

- ``text``: held-out text for ``perplexity``.
- ``question`` (or ``prompt``) with ``answer`` (a string or a list of accepted answers):
  ``exact_match``, ``contains_answer``; ``"answer": null`` or ``"answerable": false`` marks a
  question whose answer is in no document, scored by ``refusal``; ``source`` (the document
  holding the answer) is scored by ``citation`` when a store is given.
- ``question``/``prompt`` with ``expected`` (the JSON object the reply must be): ``json``
  (valid JSON, schema-valid, field accuracy); the schema comes from the item's ``schema`` or
  the ``schema`` argument.
- a QA item with ``answer_field`` (e.g. ``"answer"``): the reply must be a JSON object (``json``:
  valid JSON, schema-valid) whose ``answer_field`` holds the answer; the QA metrics and the
  refusal read that field, ``citation`` reads the whole reply, and ``correct_and_valid`` is
  schema-valid *and* right (the answer for answerable items, a refusal for the others).
- ``messages`` (the chat shape): everything before a final assistant turn is the prompt, that
  turn is the reference (parsed as ``expected`` when it is a JSON object, else the ``answer``).

``latency`` is measured on every generated reply. Every rate comes with a 95% interval
(:mod:`tuneforge.evaluate.intervals`: Wilson for proportions, bootstrap for field accuracy).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError, DataError
from tuneforge.evaluate import metrics as m
from tuneforge.evaluate.intervals import (
    Interval,
    bootstrap_interval,
    wilson_interval,
)
from tuneforge.progress import Progress
from tuneforge.rag.prompting import DEFAULT_PROMPT_FORMAT
from tuneforge.rag.replies import is_refusal

METRICS = ("perplexity", "exact_match", "contains_answer", "json", "citation", "refusal", "latency")

QA_SYSTEM_PROMPT = (
    'Answer the question in one short sentence. If you do not know the answer, say "I don\'t know".'
)
"""The system prompt of plain (non-retrieval) question answering; the RAG prompt has its own."""


@dataclass
class Response:
    """One generated reply.

    Attributes:
        text: the reply.
        seconds: wall time to produce it, retrieval included.
        sources: the source (document path or id) behind each ``[n]`` shown in the prompt.
        refused: the system declined to answer (its own decision, or a refusal phrase).
    """

    text: str
    seconds: float
    sources: dict[int, str] = field(default_factory=dict)
    refused: bool = False


Responder = Callable[[dict], Response]
"""Turns one item into a :class:`Response`; :func:`evaluate` builds one unless given one."""

EVAL_BATCH_SIZE = 16
"""Items :func:`evaluate` decodes together when its responder can (a :class:`BatchResponder`)."""


@dataclass
class EvalResult:
    """Averages over the data set and one row per item.

    Attributes:
        metrics: name -> value; rates are fractions in [0, 1], ``*_s`` in seconds, ``n_*`` counts.
        rows: per item: the prompt, the reply, its seconds and verdicts.
        intervals: rate name -> its 95% interval and count.
    """

    metrics: dict[str, float]
    rows: list[dict]
    intervals: dict[str, Interval] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready (``nan`` becomes ``None``)."""

        def clean(value: float) -> float | None:
            return None if isinstance(value, float) and math.isnan(value) else value

        return {
            "metrics": {k: clean(v) for k, v in self.metrics.items()},
            "intervals": {
                k: {key: clean(v) for key, v in ci.to_dict().items()}
                for k, ci in self.intervals.items()
            },
            "rows": self.rows,
        }


def load_eval_data(path: Path | str) -> list[dict]:
    """Read a JSONL evaluation file; every line must be a JSON object.

    Raises:
        DataError: the file is missing or a line is not a JSON object (names ``file:line``).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file; pass a JSONL evaluation file") from err
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{number}: invalid JSON ({err.msg}); fix or remove the line"
            ) from err
        if not isinstance(item, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(item).__name__}")
        items.append(normalize_item(item))
    if not items:
        raise DataError(f"{path}: no items; add one JSON object per line")
    return items


def normalize_item(item: dict) -> dict:
    """Fill ``prompt``/``system``/``answer``/``expected`` from the ``messages`` shape, if used."""
    item = dict(item)
    messages = item.get("messages")
    if isinstance(messages, list) and messages:
        turns = list(messages)
        reference = turns.pop()["content"] if turns[-1].get("role") == "assistant" else None
        item.setdefault("history", [t for t in turns if t.get("role") != "system"][:-1])
        item.setdefault(
            "system", next((t["content"] for t in turns if t.get("role") == "system"), None)
        )
        item.setdefault(
            "prompt", next((t["content"] for t in reversed(turns) if t.get("role") == "user"), "")
        )
        if reference is not None and "expected" not in item and "answer" not in item:
            parsed, error = m.parse_json_reply(reference)
            if error is None and isinstance(parsed, dict):
                item["expected"] = parsed
            else:
                item["answer"] = reference
    if "question" in item and "prompt" not in item:
        item["prompt"] = item["question"]
    if "answers" in item and "answer" not in item:
        item["answer"] = item["answers"]
    return item


def _answerable(item: dict) -> bool:
    return bool(item.get("answerable", item.get("answer") is not None))


@dataclass
class Plan:
    """How one item is answered: the row to decode, then the reply turned into a Response.

    Attributes:
        row: the request to decode (``tuneforge.generation.Row``); None when the item is
            answered without the model (e.g. retrieval found nothing relevant).
        finish: the reply to ``row`` (None when ``row`` is None) -> the item's Response.
    """

    row: object | None
    finish: Callable[[object | None], Response]


class BatchResponder:
    """A :data:`Responder` that can also answer many items in one ``generate_rows`` call.

    ``plan(item)`` prepares an item (retrieval, prompt, the row's logits processor);
    :meth:`many` decodes the rows of all the items it is given together, the way
    ``tuneforge serve`` batches concurrent requests. A reply's ``seconds`` are its own
    preparation plus the wall time from the start of the batch's decoding to the end of its row:
    the latency of an answer in a batch of that size (``evaluate(batch_size=1)`` for the
    single-stream latency).
    """

    def __init__(self, model, tokenizer, plan: Callable[[dict], Plan]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.plan = plan

    def __call__(self, item: dict) -> Response:
        return self.many([item])[0]

    def many(self, items: Sequence[dict]) -> list[Response]:
        """One Response per item, in order; the items' rows decoded in one batch."""
        from tuneforge.generation import generate_rows

        plans = [self.plan(item) for item in items]
        rows = [plan.row for plan in plans if plan.row is not None]
        replies = iter(generate_rows(self.model, self.tokenizer, rows) if rows else [])
        return [plan.finish(None if plan.row is None else next(replies)) for plan in plans]


def chat_plan(tokenizer, messages: list[dict], settings=None, logits_processor=None) -> Plan:
    """The plan of a reply from the model alone: its row, and the reply as a Response."""
    from tuneforge.generation import chat_row

    def finish(reply) -> Response:
        text = reply.text.strip()
        return Response(text, reply.seconds, refused=is_refusal(text))

    return Plan(chat_row(tokenizer, messages, settings, logits_processor), finish)


def _messages(item: dict, system: str | None) -> list[dict]:
    from tuneforge.generation import chat_messages

    return chat_messages(item["prompt"], item.get("system") or system, item.get("history") or None)


def plain_responder(
    model, tokenizer, settings=None, system: str | None = QA_SYSTEM_PROMPT
) -> BatchResponder:
    """Answer from the model alone; ``system`` applies to items without their own."""

    def plan(item: dict) -> Plan:
        return chat_plan(tokenizer, _messages(item, system), settings)

    return BatchResponder(model, tokenizer, plan)


def rag_responder(
    model,
    tokenizer,
    store,
    settings=None,
    top_k: int = 3,
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    client_system: str | None = None,
) -> BatchResponder:
    """Answer with retrieval the way ``tuneforge.rag.answer`` (``rag ask``) does.

    The item's own system text and earlier turns (the ``messages`` shape) go into the prompt as
    a client's would on the server: the system text after the format's instruction, the turns
    before the question.

    Args:
        model: a causal LM (plain or with an adapter).
        tokenizer: its tokenizer.
        store: a ``RagStore``.
        settings: generation settings.
        top_k: hits retrieved per item.
        prompt_format: a name from ``tuneforge.rag.PROMPT_FORMATS``: ``sources`` (numbered
            sources to cite) or ``examples`` (retrieved examples as demonstrations).
        client_system: system text for items without their own (e.g. the one a RAFT adapter
            was trained with, ``tuneforge.rag.raft.trained_prompt``).
    """
    from tuneforge.generation import chat_row
    from tuneforge.rag import answer_from, retrieve_prompt

    def plan(item: dict) -> Plan:
        start = time.perf_counter()
        prompt = retrieve_prompt(
            item["prompt"],
            store,
            top_k,
            prompt_format=prompt_format,
            client_system=item.get("system") or client_system,
            history=item.get("history") or None,
        )
        retrieval_s = time.perf_counter() - start
        row = None if prompt.refused else chat_row(tokenizer, prompt.messages, settings)

        def finish(reply) -> Response:
            result = answer_from(prompt, reply)
            sources = {n: hit.source for n, hit in enumerate(result.hits, start=1)}
            seconds = retrieval_s + (reply.seconds if reply is not None else 0.0)
            return Response(result.text, seconds, sources, result.refused)

        return Plan(row, finish)

    return BatchResponder(model, tokenizer, plan)


def evaluate(
    model,
    tokenizer,
    data: Sequence[dict],
    metrics: Sequence[str],
    store=None,
    *,
    schema: Mapping | None = None,
    settings=None,
    responder: Responder | None = None,
    progress: bool = False,
    batch_size: int = EVAL_BATCH_SIZE,
) -> EvalResult:
    """Score ``model`` on ``data`` with the chosen ``metrics``.

    Args:
        model: a causal LM (plain or with an adapter).
        tokenizer: its tokenizer.
        data: items as described in this module's docstring (see :func:`load_eval_data`).
        metrics: names from :data:`METRICS`.
        store: a RAG store; when given, replies come from retrieval-augmented answering.
        schema: JSON schema for ``json`` items without their own ``schema``.
        settings: generation settings (default greedy, 256 new tokens).
        responder: overrides how a reply is produced (e.g. a custom retrieval prompt).
        progress: show progress (``tuneforge.progress``: a bar on a terminal, a line every
            30 s in a log).
        batch_size: items decoded together when the responder is a :class:`BatchResponder`
            (the built-in ones are); 1 answers one item at a time, which makes ``latency``
            the single-stream latency. Other responders are called one item at a time.

    Raises:
        ConfigError: an unknown metric, ``citation`` without a store, or ``batch_size`` < 1.
    """
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ConfigError(
            f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}"
        )
    if "citation" in metrics and store is None and responder is None:
        raise ConfigError("metric 'citation' needs a store: pass --store DIR")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}: must be at least 1")
    items = [normalize_item(item) for item in data]
    results: dict[str, float] = {}
    if "perplexity" in metrics:
        texts = [item["text"] for item in items if isinstance(item.get("text"), str)]
        ppl = m.perplexity(model, tokenizer, texts)
        results.update(
            perplexity=ppl.perplexity, nll_per_token=ppl.nll_per_token, n_tokens=float(ppl.tokens)
        )

    generative = [name for name in metrics if name not in ("perplexity", "latency")]
    prompts = [
        item
        for item in items
        if "prompt" in item and ("answer" in item or "expected" in item or "answerable" in item)
    ]
    if not (generative or "latency" in metrics) or not prompts:
        return EvalResult(results, [])
    if responder is None:
        responder = (
            rag_responder(model, tokenizer, store, settings)
            if store is not None
            else plain_responder(model, tokenizer, settings)
        )
    answer_many = getattr(responder, "many", None)
    if answer_many is None:
        batch_size, answer_many = 1, lambda batch: [responder(item) for item in batch]
    rows = []
    with Progress("evaluating", len(prompts), "item", enabled=progress) as shown:
        for first in range(0, len(prompts), batch_size):
            batch = prompts[first : first + batch_size]
            for item, response in zip(batch, answer_many(batch), strict=True):
                rows.append(score_item(item, response, metrics, schema))
            shown.update(len(batch))
    results.update(aggregate(rows, metrics))
    return EvalResult(results, rows, rate_intervals(rows, metrics))


def score_item(
    item: dict, response: Response, metrics: Sequence[str], schema: Mapping | None = None
) -> dict:
    """One row: the prompt, the reply, its seconds and a verdict per applicable metric."""
    row: dict = {
        "prompt": item["prompt"],
        "reply": response.text,
        "seconds": round(response.seconds, 4),
    }
    if "expected" in item:
        score = m.score_json(response.text, item.get("schema") or schema, item["expected"])
        if "json" in metrics:
            row.update(
                valid_json=score.valid_json,
                schema_valid=score.schema_valid,
                field_accuracy=score.field_accuracy,
            )
            if score.errors:
                row["json_errors"] = score.errors[:3]
        return row
    answerable = _answerable(item)
    answer_text, refused = response.text, response.refused
    if item.get("answer_field") and "json" in metrics:
        answer_text, refused = _json_answer(item, response, schema, row)
    row["answerable"] = answerable
    row["refused"] = refused
    if answerable and item.get("answer") is not None:
        if "exact_match" in metrics:
            row["exact_match"] = m.exact_match(answer_text, item["answer"])
        if "contains_answer" in metrics:
            row["contains_answer"] = m.contains_answer(answer_text, item["answer"])
        if "citation" in metrics and item.get("source"):
            row["citation_correct"] = m.citation_correct(
                response.text, response.sources, item["source"]
            )
            row["retrieval_hit"] = m.retrieval_hit(response.sources, item["source"])
    if "schema_valid" in row:
        right = (
            m.contains_answer(answer_text, item["answer"])
            if answerable and item.get("answer") is not None
            else refused
        )
        row["correct_and_valid"] = row["schema_valid"] and right
    return row


def _json_answer(
    item: dict, response: Response, schema: Mapping | None, row: dict
) -> tuple[str, bool]:
    """Score a reply that must be a JSON object holding the answer in ``item["answer_field"]``.

    Adds ``valid_json``/``schema_valid`` (and ``json_errors``) to ``row``; returns the answer
    field's text ("" when the reply is not such an object) and whether the reply refuses (the
    field says so, or the system refused before any JSON was written).
    """
    score = m.score_json(response.text, item.get("schema") or schema)
    row.update(valid_json=score.valid_json, schema_valid=score.schema_valid)
    if score.errors:
        row["json_errors"] = score.errors[:3]
    value, _ = m.parse_json_reply(response.text)
    answer = value.get(item["answer_field"]) if isinstance(value, dict) else None
    if not isinstance(answer, str):
        return "", response.refused
    return answer, response.refused or is_refusal(answer)


def aggregate(rows: list[dict], metrics: Sequence[str]) -> dict[str, float]:
    """Averages over rows: each verdict's mean, refusal scores, latency statistics."""
    out: dict[str, float] = {}
    for key in RATE_KEYS:
        values = [float(row[key]) for row in rows if key in row and not _isnan(row[key])]
        if values:
            out[key] = sum(values) / len(values)
            out[f"n_{key}"] = float(len(values))
    if "refusal" in metrics:
        scores = m.refusal_scores(
            (row["answerable"], row["refused"]) for row in rows if "answerable" in row
        )
        out.update(
            refusal_rate=scores.refusal_rate,
            hallucination_rate=scores.hallucination_rate,
            over_refusal_rate=scores.over_refusal_rate,
            n_unanswerable=float(scores.unanswerable),
            n_answerable=float(scores.answerable),
        )
    stats = m.latency_stats([row["seconds"] for row in rows])
    out.update(latency_mean_s=stats.mean_s, latency_p95_s=stats.p95_s)
    return out


def rate_intervals(rows: list[dict], metrics: Sequence[str]) -> dict[str, Interval]:
    """The 95% interval of every rate :func:`aggregate` reports, from the same rows.

    Wilson for the 0/1 verdicts and the refusal rates, the percentile bootstrap for field
    accuracy (a per-item fraction); hallucination is one minus refusal, so its interval is the
    refusal interval mirrored.
    """
    intervals: dict[str, Interval] = {}
    for key in RATE_KEYS:
        values = [float(row[key]) for row in rows if key in row and not _isnan(row[key])]
        if not values:
            continue
        if key in BOOTSTRAP_KEYS:
            intervals[key] = bootstrap_interval(values)
        else:
            intervals[key] = wilson_interval(round(sum(values)), len(values))
    if "refusal" in metrics:
        outcomes = [(row["answerable"], row["refused"]) for row in rows if "answerable" in row]
        unanswerable = [refused for answerable, refused in outcomes if not answerable]
        answerable = [refused for answerable, refused in outcomes if answerable]
        if unanswerable:
            refusal = wilson_interval(sum(unanswerable), len(unanswerable))
            intervals["refusal_rate"] = refusal
            intervals["hallucination_rate"] = Interval(
                1 - refusal.high, 1 - refusal.low, refusal.n, refusal.method
            )
        if answerable:
            intervals["over_refusal_rate"] = wilson_interval(sum(answerable), len(answerable))
    return intervals


RATE_KEYS = (
    "exact_match",
    "contains_answer",
    "citation_correct",
    "retrieval_hit",
    "valid_json",
    "schema_valid",
    "field_accuracy",
    "correct_and_valid",
)
"""Per-item verdicts averaged into rates (each with its ``n_<key>`` count)."""

BOOTSTRAP_KEYS = ("field_accuracy",)
"""Rates that are means of per-item fractions, not proportions: bootstrap intervals."""

RATE_COUNTS = {
    "refusal_rate": "n_unanswerable",
    "hallucination_rate": "n_unanswerable",
    "over_refusal_rate": "n_answerable",
}
"""The count behind each refusal rate (the others: ``n_<name>``)."""


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def format_table(result: EvalResult) -> str:
    """The metrics as an aligned text table; a rate shows its 95% interval and count."""
    width = max((len(k) for k in result.metrics), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in result.metrics.items():
        if _isnan(value):
            shown = "n/a"
        elif key.startswith("n_"):
            shown = f"{value:.0f}"
        elif key.endswith("_s"):
            shown = f"{value:.3f} s"
        elif key in ("perplexity", "nll_per_token"):
            shown = f"{value:.3f}"
        else:
            shown = f"{value:.1%}"
            interval = result.intervals.get(key)
            if interval is not None and not _isnan(interval.low):
                shown += (
                    f"  [{interval.low:.1%}, {interval.high:.1%}] 95% {interval.method},"
                    f" n={interval.n}"
                )
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)
