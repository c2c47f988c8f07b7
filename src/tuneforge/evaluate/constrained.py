"""Answering under a JSON schema (constrained decoding) for ``eval --json-schema`` and compare.

:func:`constrained_responder` is :func:`tuneforge.evaluate.runner.plain_responder` with every
reply decoded under one schema's grammar (``tuneforge.generation.constrained``): each item gets
its own matcher, so every finished reply is schema-valid JSON by construction, and what is left
to measure is field accuracy and latency. A reply cut by ``max_new_tokens`` before its JSON
closed is scored as it is (invalid JSON), never repaired.

The compare report weighs the constrained arms in
:func:`tuneforge.evaluate.recommendation.recommendation`: schema validity being given, it asks
whether fine-tuning still buys field accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping

from tuneforge.evaluate.runner import (
    QA_SYSTEM_PROMPT,
    BatchResponder,
    Plan,
    chat_plan,
)


def constrained_responder(
    model,
    tokenizer,
    schema: Mapping | None,
    settings=None,
    system: str | None = QA_SYSTEM_PROMPT,
) -> BatchResponder:
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
        a :class:`~tuneforge.evaluate.runner.BatchResponder` for ``evaluate(responder=...)``.

    Raises:
        SchemaError: the schema is not valid JSON Schema or cannot be compiled.
    """
    from tuneforge.generation import JsonSchemaCompiler, chat_messages

    grammar = JsonSchemaCompiler.for_model(model, tokenizer).compile(schema)

    def plan(item: dict) -> Plan:
        messages = chat_messages(
            item["prompt"], item.get("system") or system, item.get("history") or None
        )
        return chat_plan(tokenizer, messages, settings, grammar.row_processor())

    return BatchResponder(model, tokenizer, plan)
