"""The shipped general-ability assets: well formed, and answered by the base model (slow)."""

from __future__ import annotations

import pytest

from tuneforge.evaluate.compare import general_asset
from tuneforge.evaluate.runner import evaluate, load_eval_data


def test_general_assets_are_well_formed():
    questions = load_eval_data(general_asset("questions.jsonl"))
    texts = load_eval_data(general_asset("text.jsonl"))
    assert len(questions) == 20 and all(q["answer"] for q in questions)
    assert len(texts) == 10 and all(len(t["text"].split()) > 30 for t in texts)


def test_knowledge_items_keep_gold_sources_and_unanswerables():
    from tuneforge.rag.qa_records import read_qa_records
    from tuneforge.tasks.knowledge_base import questions_path

    items = [record.eval_item() for record in read_qa_records(questions_path())]
    assert sum(not item["answerable"] and item["answer"] is None for item in items) >= 20
    assert all(item["source"] for item in items if item["answerable"])
    # Every document stating the answer is a gold source (q01: the overview and the history).
    assert items[0]["source"] == ["company-overview.md", "history.md"]


@pytest.mark.slow
def test_base_model_answers_the_general_questions(default_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.generation import GenerationSettings

    model = AutoModelForCausalLM.from_pretrained(default_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    questions = load_eval_data(general_asset("questions.jsonl"))[:4]
    result = evaluate(
        model,
        tokenizer,
        questions,
        ["contains_answer"],
        settings=GenerationSettings(max_new_tokens=24),
    )
    assert result.metrics["contains_answer"] >= 0.75
