"""Answering under a JSON schema (constrained decoding) for ``eval --json-schema`` and compare.

:func:`constrained_responder` is :func:`tuneforge.evaluate.runner.plain_responder` with every
reply decoded under one schema's grammar (``tuneforge.generation.constrained``): each item gets
its own matcher, so every finished reply is schema-valid JSON by construction, and what is left
to measure is field accuracy and latency. A reply cut by ``max_new_tokens`` before its JSON
closed is scored as it is (invalid JSON), never repaired.

:func:`format_note` is the compare report's closing line on format once the constrained arms
were measured: with schema-validity 100% by construction, it asks whether fine-tuning still
buys field accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from tuneforge.evaluate.runner import QA_SYSTEM_PROMPT, Responder, Response
from tuneforge.rag.replies import is_refusal


def constrained_responder(
    model,
    tokenizer,
    schema: Mapping | None,
    settings=None,
    system: str | None = QA_SYSTEM_PROMPT,
) -> Responder:
    """Answer from the model alone, every reply decoded under ``schema``.

    The schema is compiled once, here (so a schema the engine refuses fails before any item
    is asked); each item then gets a fresh matcher.

    Args:
        model: a causal LM (plain or with an adapter).
        tokenizer: its (fast) tokenizer.
        schema: the JSON schema replies follow; None: any JSON object.
        settings: generation settings (``max_new_tokens`` is the reply's budget in tokens).
        system: the system prompt of items without their own.

    Returns:
        a :data:`~tuneforge.evaluate.runner.Responder` for ``evaluate(responder=...)``.

    Raises:
        SchemaError: the schema is not valid JSON Schema or cannot be compiled.
    """
    from tuneforge.generation import JsonSchemaCompiler, chat_messages, generate

    grammar = JsonSchemaCompiler.for_model(model, tokenizer).compile(schema)

    def respond(item: dict) -> Response:
        start = time.perf_counter()
        messages = chat_messages(
            item["prompt"], item.get("system") or system, item.get("history") or None
        )
        reply = generate(
            model, tokenizer, messages, settings, logits_processor=grammar.row_processor()
        )
        text = reply.text.strip()
        return Response(text, time.perf_counter() - start, refused=is_refusal(text))

    return respond


def format_note(
    metric: Callable[[str, str, str], float], margin: float = 0.05, task: str = "json"
) -> str | None:
    """The recommendation's line on format from the constrained arms' numbers.

    Rule: "base+constrained" is the cheapest way to valid JSON; fine-tuning is needed only if
    a fine-tuned arm ("fine-tuned" or "fine-tuned+constrained") beats it on field accuracy by
    at least ``margin``. Latency (mean seconds per reply) is quoted beside the verdict.

    Args:
        metric: ``Comparison.metric``: ``(arm, task, metric name) -> value`` (nan: not measured).
        margin: a field-accuracy difference below this is no clear winner (a fraction).
        task: the task the arms answered.

    Returns:
        one line, or None when "base+constrained" was not measured (the report then keeps its
        line without constrained arms).
    """

    def pct(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.0%}"

    base_valid = metric("base+constrained", task, "schema_valid")
    base_fields = metric("base+constrained", task, "field_accuracy")
    if math.isnan(base_valid) or math.isnan(base_fields):
        return None
    tuned = [
        (arm, metric(arm, task, "field_accuracy"), metric(arm, task, "latency_mean_s"))
        for arm in ("fine-tuned", "fine-tuned+constrained")
    ]
    tuned = [row for row in tuned if not math.isnan(row[1])]
    base_latency = metric("base+constrained", task, "latency_mean_s")
    seconds = f"{base_latency:.2f} s" if not math.isnan(base_latency) else "n/a"
    base = f"base+constrained {pct(base_valid)} schema-valid, {pct(base_fields)} field accuracy"
    if not tuned:
        return f"format by constrained decoding, no fine-tuning measured ({base}, {seconds}/reply)"
    arm, fields, latency = max(tuned, key=lambda row: row[1])
    other = f"{arm} {pct(fields)} field accuracy, " + (
        f"{latency:.2f} s/reply" if not math.isnan(latency) else "latency n/a"
    )
    if fields - base_fields >= margin:
        return f"fine-tune for the content, not the format ({base}, {seconds}/reply; {other})"
    return f"no need to fine-tune for format ({base}, {seconds}/reply; {other})"
