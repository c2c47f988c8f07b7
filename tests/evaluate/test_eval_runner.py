"""evaluate(): items in, averaged metrics and per-item rows out."""

from __future__ import annotations

import json
import math

import pytest

from tuneforge.errors import ConfigError, DataError
from tuneforge.evaluate.runner import Response, evaluate, format_table, load_eval_data

SCHEMA = {"type": "object", "required": ["item"], "properties": {"item": {"type": "string"}}}

ITEMS = [
    {"question": "When did the bridge open?", "answer": "1987", "source": "kb/bridge.md"},
    {"question": "Who runs the ferry?", "answer": ["Nordlys Lines"], "source": "kb/ferry.md"},
    {"question": "What is the mayor's cat called?", "answer": None},
    {"question": "What colour is the moon base?", "answerable": False},
    {
        "messages": [
            {"role": "user", "content": "Order a lamp"},
            {"role": "assistant", "content": '{"item": "lamp"}'},
        ]
    },
    {"text": "The capital of France is Paris. The capital of Norway is Oslo."},
]

# Hand-made replies, keyed by prompt: a right answer with a wrong citation, a right answer with
# the right citation, one refusal and one hallucinated answer, one JSON reply.
REPLIES = {
    "When did the bridge open?": Response(
        "It opened in 1987 [2].", 0.5, {1: "kb/bridge.md", 2: "kb/ferry.md"}
    ),
    "Who runs the ferry?": Response("Nordlys Lines [1].", 1.5, {1: "kb/ferry.md"}),
    "What is the mayor's cat called?": Response("I don't know.", 0.2, refused=True),
    "What colour is the moon base?": Response("It is bright green.", 0.2),
    "Order a lamp": Response('{"item": "Lamp"}', 0.1),
}


def test_evaluate_with_handmade_replies(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    result = evaluate(
        model,
        tokenizer,
        ITEMS,
        ["perplexity", "exact_match", "contains_answer", "json", "citation", "refusal", "latency"],
        schema=SCHEMA,
        responder=lambda item: REPLIES[item["prompt"]],
    )
    got = result.metrics
    assert got["contains_answer"] == 1.0
    assert got["exact_match"] == 0.5  # citation markers are ignored
    assert got["citation_correct"] == 0.5  # the wrong citation counts wrong
    assert got["retrieval_hit"] == 1.0  # both gold documents were shown
    assert got["refusal_rate"] == 0.5 and got["hallucination_rate"] == 0.5
    assert got["valid_json"] == got["schema_valid"] == got["field_accuracy"] == 1.0
    assert got["latency_mean_s"] == pytest.approx((0.5 + 1.5 + 0.2 + 0.2 + 0.1) / 5)
    assert got["perplexity"] > 1 and got["n_tokens"] > 5
    assert len(result.rows) == 5
    assert "citation_correct" in format_table(result)
    json.dumps(result.to_dict())


def test_progress_in_a_log_is_whole_lines(capsys):
    # stderr captured is not a terminal: tuneforge.progress writes whole lines, no tqdm redraws
    answered = [item for item in ITEMS if item.get("question") in REPLIES]
    evaluate(
        None,
        None,
        answered,
        ["contains_answer"],
        responder=lambda item: REPLIES[item["prompt"]],
        progress=True,
    )
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("evaluating: 4/4 items (100%)")


def test_evaluate_generates_with_the_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.generation import GenerationSettings

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    result = evaluate(
        model,
        tokenizer,
        ITEMS[:2],
        ["contains_answer", "latency"],
        settings=GenerationSettings(max_new_tokens=4),
    )
    assert result.metrics["n_contains_answer"] == 2
    assert result.metrics["latency_mean_s"] > 0
    assert not math.isnan(result.metrics["contains_answer"])


def test_evaluate_rejects_unknown_metric_and_citation_without_store():
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate(None, None, ITEMS, ["bleu"])
    with pytest.raises(ConfigError, match="needs a store"):
        evaluate(None, None, ITEMS, ["citation"])


def test_load_eval_data_names_file_and_line(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"eval.jsonl:3: expected a JSON object"):
        load_eval_data(path)
    path.write_text('{"question": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"eval.jsonl:2: invalid JSON"):
        load_eval_data(path)
    path.write_text('{"question": "q", "answer": "a"}\n')
    assert load_eval_data(path)[0]["prompt"] == "q"
