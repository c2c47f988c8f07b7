"""``constrained_responder``: the compare arms "base + constrained" and "fine-tuned +
constrained" (and ``eval --json-schema``) score replies decoded under the task's schema."""

from __future__ import annotations

import json

import pytest
import torch
from eval_fixed_numbers import fixed_comparison, with_rate

from json_schemas import ORDER
from tuneforge.evaluate import evaluate
from tuneforge.evaluate.constrained import constrained_responder
from tuneforge.evaluate.recommendation import recommendation
from tuneforge.evaluate.results import ArmResult
from tuneforge.evaluate.runner import plain_responder
from tuneforge.generation import (
    GenerationSettings,
    JsonSchemaCompiler,
    SchemaError,
    chat_messages,
    generate,
)
from tuneforge.models import load_model

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


GIVEN = (
    "format: constrained decoding gives the base 100% [94–100%] schema-valid replies (the "
    "fine-tune alone 90% [80–95%])"
)


def constrained_comparison(base_fields: float, tuned_fields: dict[str, float], n: int = 60):
    """The fixed comparison plus the constrained arms on the json task (field accuracy over
    ``n`` items, schema validity 100% for the constrained ones)."""
    comparison = fixed_comparison()
    for arm in ("base+constrained", "fine-tuned+constrained"):
        comparison.arms.append(ArmResult(arm, "json", {}, [], "held-out", {}))
    with_rate(comparison, "base+constrained", "json", "schema_valid", 1.0, n)
    with_rate(comparison, "base+constrained", "json", "field_accuracy", base_fields, n)
    for arm, fields in tuned_fields.items():
        with_rate(comparison, arm, "json", "field_accuracy", fields, n)
    return comparison


@pytest.mark.parametrize(
    ("base_fields", "tuned", "expected"),
    [
        (0.55, {"fine-tuned": 0.85, "fine-tuned+constrained": 0.83},
         GIVEN + "; fine-tune for the content (fine-tuned 85% [74–92%] field accuracy vs "
         "base+constrained 55% [42–67%])"),
        (0.90, {"fine-tuned": 0.40, "fine-tuned+constrained": 0.50},
         "format: no need to fine-tune: constrained decoding gives the base 100% [94–100%] "
         "schema-valid replies (the fine-tune alone 90% [80–95%]), and its fields are more "
         "accurate (base+constrained 90% [80–95%] vs fine-tuned+constrained 50% [38–62%] field "
         "accuracy)"),
        (0.60, {"fine-tuned": 0.65},
         GIVEN + "; the fields' content: too few questions to tell fine-tuned 65% [52–76%] from "
         "base+constrained 60% [47–71%]"),
        (0.60, {}, GIVEN + "; no fine-tune measured"),
    ],
)  # fmt: skip
def test_recommendation_weighs_fine_tuning_against_constrained_decoding(
    base_fields, tuned, expected
):
    """Schema validity being given by the grammar, the report names fine-tuning for format
    only where its field accuracy's interval clears the constrained base's."""
    line = recommendation(constrained_comparison(base_fields, tuned))
    assert expected in line


def test_recommendation_says_nothing_of_constrained_decoding_when_not_measured():
    assert "constrained" not in recommendation(fixed_comparison())


def test_the_report_has_constrained_columns_only_where_they_ran():
    from tuneforge.evaluate.report import classic_table, render_markdown

    assert "base+constrained" not in render_markdown(fixed_comparison())
    comparison = constrained_comparison(0.55, {"fine-tuned+constrained": 0.83})
    assert comparison.arm_names[-2:] == ("base+constrained", "fine-tuned+constrained")
    form = next(row for row in classic_table(comparison) if row.label.startswith("Teaching"))
    assert form.cells[-2:] == ["100% [94–100%]", "n/a"]  # schema_valid of the tuned one not set
    assert "| base+constrained | fine-tuned+constrained | best |" in render_markdown(comparison)
