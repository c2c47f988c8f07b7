"""``constrained_responder``: the compare arms "base + constrained" and "fine-tuned +
constrained" (and ``eval --json-schema``) score replies decoded under the task's schema."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tuneforge.evaluate import evaluate
from tuneforge.evaluate.constrained import constrained_responder, format_note
from tuneforge.evaluate.runner import plain_responder
from tuneforge.generation import (
    GenerationSettings,
    JsonSchemaCompiler,
    SchemaError,
    chat_messages,
    generate,
)
from tuneforge.models import load_model

ORDER = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["order", "cancel", "return"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 12},
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "quantity", "urgent"],
    "additionalProperties": False,
}
ITEMS = [
    {"prompt": "Order 2 lamps", "expected": {"intent": "order", "quantity": 2, "urgent": False}},
    {
        "prompt": "Cancel 3 mugs now",
        "system": "You turn requests into JSON orders.",
        "expected": {"intent": "cancel", "quantity": 3, "urgent": True},
    },
]
SETTINGS = GenerationSettings(max_new_tokens=60)


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    """(base, fine-tuned) on one tokenizer: the fine-tune a random LoRA with non-zero B."""
    from peft import LoraConfig, get_peft_model

    base = load_model(str(tiny_model_dir))
    tuned = load_model(str(tiny_model_dir)).model
    torch.manual_seed(5)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    tuned = get_peft_model(tuned, config)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.5)
    return base.model, tuned, base.tokenizer


@pytest.mark.parametrize("arm", ["base", "fine-tuned"])
def test_every_reply_is_schema_valid_and_field_accuracy_is_scored(models, arm):
    base, tuned, tokenizer = models
    model = base if arm == "base" else tuned
    free = evaluate(
        model,
        tokenizer,
        ITEMS,
        ["json", "latency"],
        schema=ORDER,
        responder=plain_responder(model, tokenizer, SETTINGS, None),
    )
    result = evaluate(
        model,
        tokenizer,
        ITEMS,
        ["json", "latency"],
        schema=ORDER,
        responder=constrained_responder(model, tokenizer, ORDER, SETTINGS, None),
    )
    assert free.metrics["schema_valid"] == 0.0  # the grammar, not the tiny model, makes it valid
    assert result.metrics["valid_json"] == result.metrics["schema_valid"] == 1.0
    assert 0.0 <= result.metrics["field_accuracy"] <= 1.0
    assert result.metrics["latency_mean_s"] > 0
    for row, item in zip(result.rows, ITEMS, strict=True):
        assert set(json.loads(row["reply"])) == set(item["expected"])


def test_replies_are_those_of_generate_under_the_grammar_with_the_items_system(models):
    base, _, tokenizer = models
    respond = constrained_responder(base, tokenizer, ORDER, SETTINGS, system="Reply in JSON.")
    grammar = JsonSchemaCompiler.for_model(base, tokenizer).compile(ORDER)
    for item in ITEMS:
        messages = chat_messages(item["prompt"], item.get("system") or "Reply in JSON.")
        expected = generate(
            base, tokenizer, messages, SETTINGS, logits_processor=grammar.row_processor()
        )
        assert respond(item).text == expected.text.strip()


def test_a_reply_cut_by_the_budget_is_scored_invalid_not_repaired(models):
    base, _, tokenizer = models
    short = GenerationSettings(max_new_tokens=3)
    result = evaluate(
        base,
        tokenizer,
        ITEMS[:1],
        ["json"],
        schema=ORDER,
        responder=constrained_responder(base, tokenizer, ORDER, short, None),
    )
    assert result.rows[0]["reply"].startswith("{")
    assert result.metrics["valid_json"] == 0.0


def test_a_schema_the_engine_cannot_enforce_fails_before_any_item(models):
    base, _, tokenizer = models
    with pytest.raises(SchemaError, match="uniqueItems"):
        constrained_responder(base, tokenizer, {"type": "array", "uniqueItems": True})


def numbers(table: dict):
    """``Comparison.metric`` over ``{(arm, metric): value}`` for the json task."""

    def metric(arm: str, task: str, name: str) -> float:
        return table.get((arm, name), math.nan) if task == "json" else math.nan

    return metric


BASE_CONSTRAINED = {
    ("base+constrained", "schema_valid"): 1.0,
    ("base+constrained", "field_accuracy"): 0.6,
    ("base+constrained", "latency_mean_s"): 1.5,
}


@pytest.mark.parametrize(
    ("tuned", "expected"),
    [
        ({("fine-tuned", "field_accuracy"): 0.9, ("fine-tuned", "latency_mean_s"): 1.2},
         "fine-tune for the content, not the format (base+constrained 100% schema-valid, 60% "
         "field accuracy, 1.50 s/reply; fine-tuned 90% field accuracy, 1.20 s/reply)"),
        ({("fine-tuned", "field_accuracy"): 0.62, ("fine-tuned+constrained", "field_accuracy"): 0.5},
         "no need to fine-tune for format (base+constrained 100% schema-valid, 60% field "
         "accuracy, 1.50 s/reply; fine-tuned 62% field accuracy, latency n/a)"),
        ({("fine-tuned", "field_accuracy"): 0.2, ("fine-tuned+constrained", "field_accuracy"): 0.7,
          ("fine-tuned+constrained", "latency_mean_s"): 2.0},
         "fine-tune for the content, not the format (base+constrained 100% schema-valid, 60% "
         "field accuracy, 1.50 s/reply; fine-tuned+constrained 70% field accuracy, 2.00 s/reply)"),
        ({}, "format by constrained decoding, no fine-tuning measured (base+constrained 100% "
         "schema-valid, 60% field accuracy, 1.50 s/reply)"),
    ],
)  # fmt: skip
def test_format_note_says_whether_fine_tuning_beats_constrained_decoding(tuned, expected):
    assert format_note(numbers({**BASE_CONSTRAINED, **tuned})) == expected


def test_format_note_is_none_without_the_constrained_arms():
    assert format_note(numbers({("fine-tuned", "field_accuracy"): 0.9})) is None
