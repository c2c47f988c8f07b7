"""evaluate() decodes its items in batches: the same replies as one at a time, fewer calls."""

from __future__ import annotations

import pytest

from tuneforge.errors import ConfigError
from tuneforge.evaluate.constrained import constrained_responder
from tuneforge.evaluate.runner import Response, evaluate, plain_responder, rag_responder
from tuneforge.generation import GenerationSettings
from tuneforge.rag import REFUSAL, Hit

QUESTIONS = [
    {"question": "When did the bridge open?", "answer": "1987"},
    {"question": "Who runs the ferry?", "answer": "Nordlys Lines"},
    {"question": "What is on the moon?", "answerable": False},
    {"question": "How long is the warranty?", "answer": "3 years"},
    {"question": "Where is the lamp made?", "answer": "Oslo"},
]


class _Store:
    """Two relevant hits for every question but the one about the moon (nothing relevant)."""

    def search(self, question, top_k=5, mode="hybrid", source_filter=None):
        similarity = 0.05 if "moon" in question else 0.9
        return [
            Hit(
                f"Fact {n}.",
                f"/docs/{n}.md",
                "line 1",
                1.0,
                f"{n}:0",
                str(n),
                similarity=similarity,
            )
            for n in (1, 2)
        ][:top_k]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def decode_calls(monkeypatch) -> list[int]:
    """The number of rows of every ``generate_rows`` call."""
    import tuneforge.generation as generation

    calls: list[int] = []
    real = generation.generate_rows

    def counted(model, tokenizer, rows, adapter_names=None):
        calls.append(len(rows))
        return real(model, tokenizer, rows, adapter_names)

    monkeypatch.setattr(generation, "generate_rows", counted)
    return calls


SETTINGS = GenerationSettings(max_new_tokens=6)


@pytest.mark.parametrize("kind", ["plain", "rag", "constrained"])
def test_batches_give_the_replies_of_one_at_a_time(tiny, decode_calls, kind):
    model, tokenizer = tiny
    responder = {
        "plain": lambda: plain_responder(model, tokenizer, SETTINGS),
        "rag": lambda: rag_responder(model, tokenizer, _Store(), SETTINGS, top_k=2),
        "constrained": lambda: constrained_responder(model, tokenizer, None, SETTINGS),
    }[kind]()
    metrics = ["contains_answer", "refusal", "latency"]
    alone = evaluate(model, tokenizer, QUESTIONS, metrics, responder=responder, batch_size=1)
    generated = 4 if kind == "rag" else 5  # retrieval refuses the moon without the model
    assert decode_calls == [1] * generated
    decode_calls.clear()
    batched = evaluate(model, tokenizer, QUESTIONS, metrics, responder=responder, batch_size=3)
    assert decode_calls == ([2, 2] if kind == "rag" else [3, 2])
    assert [row["reply"] for row in batched.rows] == [row["reply"] for row in alone.rows]
    assert [row["refused"] for row in batched.rows] == [row["refused"] for row in alone.rows]
    decoded = [row for row in batched.rows if row["reply"] != REFUSAL]
    assert len(decoded) == generated and all(row["seconds"] > 0 for row in decoded)
    if kind == "rag":
        moon = batched.rows[2]
        assert moon["reply"] == REFUSAL and moon["refused"] is True


def test_the_default_batch_holds_sixteen_items(tiny, decode_calls):
    model, tokenizer = tiny
    items = [{"question": f"Question {n}?", "answer": "x"} for n in range(20)]
    evaluate(model, tokenizer, items, ["contains_answer"], settings=SETTINGS)
    assert decode_calls == [16, 4]


def test_a_plain_callable_responder_is_asked_one_item_at_a_time(tiny):
    model, tokenizer = tiny
    asked = []

    def responder(item):
        asked.append(item["prompt"])
        return Response("1987", 0.1)

    result = evaluate(model, tokenizer, QUESTIONS[:2], ["contains_answer"], responder=responder)
    assert asked == [q["question"] for q in QUESTIONS[:2]]
    assert result.metrics["contains_answer"] == 0.5


def test_progress_counts_the_items_of_each_batch(tiny, capsys):
    model, tokenizer = tiny

    def responder(item):
        return Response("1987", 0.1)

    evaluate(
        model, tokenizer, QUESTIONS[:2], ["contains_answer"], responder=responder, progress=True
    )
    assert capsys.readouterr().err.splitlines()[-1].startswith("evaluating: 2/2 items (100%)")


def test_a_batch_size_below_one_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="batch size 0: must be at least 1"):
        evaluate(model, tokenizer, QUESTIONS, ["contains_answer"], batch_size=0)


def test_eval_cli_takes_a_batch_size_and_refuses_zero(tiny_model_dir, tmp_path, capsys):
    import json

    from tuneforge.cli import main

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS[:3]))
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--max-new-tokens", "4"]
    out = tmp_path / "eval.json"
    assert main([*args, "--batch-size", "2", "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 3
    assert main([*args, "--batch-size", "0"]) != 0
    assert "batch size 0: must be at least 1" in capsys.readouterr().err
