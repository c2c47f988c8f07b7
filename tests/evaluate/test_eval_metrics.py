"""Metric unit tests on hand-made cases (reading replies: tests/rag/test_replies.py)."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.evaluate.metrics import (
    citation_correct,
    contains_answer,
    exact_match,
    field_accuracy,
    latency_stats,
    normalize_answer,
    parse_json_reply,
    perplexity,
    refusal_scores,
    retrieval_hit,
    score_json,
)

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "item": {"type": "string"},
        "quantity": {"type": "integer", "minimum": 1},
        "city": {"type": "string"},
    },
    "required": ["item", "quantity", "city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("prediction", "answers", "exact", "contains"),
    [
        ("Paris", "paris", True, True),
        ("The Paris.", ["Paris"], True, True),
        ("It is Paris, of course.", "Paris", False, True),
        ("Lyon", ["Paris", "Marseille"], False, False),
        ("120 units", "12", False, False),  # word boundary: 12 is not inside 120
        ("Answer: 12 units", ["12"], False, True),
        ("anything", "", False, False),
    ],
)
def test_exact_match_and_contains_answer(prediction, answers, exact, contains):
    assert exact_match(prediction, answers) is exact
    assert contains_answer(prediction, answers) is contains


def test_normalize_answer_drops_case_articles_and_punctuation():
    assert normalize_answer("  The  Blue-Harbour   Bridge! ") == "blueharbour bridge"


def test_refusal_scores_count_a_hallucinated_answer():
    # (answerable, refused): two unanswerable questions, one refused and one answered anyway
    # (a hallucination); one answerable question wrongly refused, one answered.
    scores = refusal_scores([(False, True), (False, False), (True, True), (True, False)])
    assert scores.refusal_rate == 0.5
    assert scores.hallucination_rate == 0.5
    assert scores.over_refusal_rate == 0.5
    assert (scores.unanswerable, scores.answerable) == (2, 2)


def test_refusal_scores_all_hallucinated_and_empty_groups():
    scores = refusal_scores([(False, False), (False, False)])
    assert scores.hallucination_rate == 1.0 and scores.refusal_rate == 0.0
    assert math.isnan(scores.over_refusal_rate)


SOURCES = {1: "kb/bridges.md", 2: "/abs/path/kb/ferries.md", 3: "kb/bridges.md"}


@pytest.mark.parametrize(
    ("text", "gold", "correct"),
    [
        ("Opened in 1987 [1].", "kb/bridges.md", True),
        ("Opened in 1987 [1][3].", "bridges.md", True),  # two chunks of the right document
        ("Opened in 1987 [1, 3].", "bridges.md", True),  # the same, as one mark
        ("Opened in 1987 [1; 2].", "kb/bridges.md", False),  # one of them wrong
        ("Opened in 1987 [2].", "kb/bridges.md", False),  # wrong citation
        ("Opened in 1987 [1][2].", "kb/bridges.md", False),  # a wrong one beside a right one
        ("Opened in 1987 [7].", "kb/bridges.md", False),  # a number that was never shown
        ("Opened in 1987.", "kb/bridges.md", False),  # no citation at all
        ("Ferries run hourly [2].", ["kb/ferries.md"], True),  # matched by file name
    ],
)
def test_citation_correct(text, gold, correct):
    assert citation_correct(text, SOURCES, gold) is correct


def test_parse_json_reply_is_strict():
    assert parse_json_reply(' {"a": 1} ') == ({"a": 1}, None)
    value, error = parse_json_reply('Sure! {"a": 1}')
    assert value is None and "not JSON" in error
    fenced = '```json\n{"a": 1}\n```'
    assert parse_json_reply(fenced)[0] is None
    assert parse_json_reply(fenced, allow_fence=True) == ({"a": 1}, None)


def test_score_json_valid_invalid_and_fields():
    expected = {"item": "lamp", "quantity": 2, "city": "Oslo"}
    good = score_json('{"item": "Lamp", "quantity": 2, "city": "Oslo"}', ORDER_SCHEMA, expected)
    assert (good.valid_json, good.schema_valid, good.field_accuracy) == (True, True, 1.0)

    wrong_type = score_json(
        '{"item": "lamp", "quantity": "two", "city": "Bergen"}', ORDER_SCHEMA, expected
    )
    assert wrong_type.valid_json and not wrong_type.schema_valid
    assert wrong_type.field_accuracy == pytest.approx(1 / 3)
    assert any(err.startswith("quantity:") for err in wrong_type.errors)

    prose = score_json("Here is your order: lamp x2", ORDER_SCHEMA, expected)
    assert (prose.valid_json, prose.schema_valid, prose.field_accuracy) == (False, False, 0.0)


def test_field_accuracy_edge_cases():
    assert field_accuracy([1, 2], {"a": 1}) == 0.0
    assert field_accuracy({"a": 2.0, "b": True}, {"a": 2, "b": 1}) == 0.5  # bool is not int
    assert math.isnan(field_accuracy({"a": 1}, {}))


def test_latency_stats():
    stats = latency_stats([0.4, 0.1, 0.2, 0.3])
    assert stats.mean_s == pytest.approx(0.25)
    assert stats.p50_s == pytest.approx(0.25)
    assert stats.p95_s == 0.4
    assert stats.count == 4
    assert math.isnan(latency_stats([]).mean_s)


def test_perplexity_is_token_weighted(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["The capital of France is Paris.", "Hello! How can I help you today? abc abc abc"]

    # Reference: transformers' own mean loss per text, re-weighted by predicted-token count.
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        total += loss * (ids.shape[1] - 1)
        count += ids.shape[1] - 1

    result = perplexity(model, tokenizer, texts)
    assert result.tokens == count
    assert result.nll_per_token == pytest.approx(total / count, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)
    # A random tiny model is close to uniform over its vocabulary: sanity, not a tight bound.
    assert 10 < result.perplexity < 10 * len(tokenizer)


def test_retrieval_hit_separates_retrieval_from_generation():
    assert retrieval_hit(SOURCES, "ferries.md")
    assert not retrieval_hit(SOURCES, "kb/prices.md")
    assert not retrieval_hit({}, "kb/bridges.md")
