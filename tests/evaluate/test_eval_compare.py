"""compare(): the table of arms × tasks run with stand-ins (fast), and end to end on the tiny
model: every arm, forgetting, update cost, report files.

The end-to-end test is marked slow: three trainings, two stores and ~40 generations take
minutes on 2 CPU cores even with a tiny model (most of it is loading and the embedding model).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tuneforge.evaluate.arms import COMPARE_ARMS, COMPARE_TASKS, arms_for
from tuneforge.evaluate.compare import Budget, TaskInputs, compare, run_arms
from tuneforge.evaluate.report import write_report
from tuneforge.evaluate.results import ARMS, load_comparison
from tuneforge.evaluate.runner import QA_SYSTEM_PROMPT
from tuneforge.generation import GenerationSettings, Reply
from tuneforge.rag import Hit, resolve_prompt_format


@pytest.mark.slow
def test_compare_runs_every_arm_on_the_tiny_model(tiny_model_dir, tmp_path):
    budget = Budget(
        kb_answerable=2,
        kb_unanswerable=1,
        json_prompts=1,
        general_questions=1,
        knowledge_steps=1,
        json_steps=1,
        json_examples=10,
        batch_size=2,
        max_new_tokens=4,
    )
    out = tmp_path / "compare"
    comparison = compare(
        out,
        budget=budget,
        model=str(tiny_model_dir),
        device="cpu",
        progress=False,
        num_threads=1,
        log=lambda _: None,
    )
    assert {(a.arm, a.task) for a in comparison.arms} == {
        (arm, t) for arm in ARMS for t in ("knowledge", "json")
    }
    assert [row.method for row in comparison.forgetting] == ["base", "full", "lora"]
    assert comparison.update_cost is not None and comparison.update_cost.reingest_seconds > 0
    assert [c.run for c in comparison.loss_curves] == [
        "knowledge-lora",
        "knowledge-full",
        "json-lora",
    ]
    assert load_comparison(out / "results.json") == comparison
    md, html = write_report(comparison, out)
    assert "| Cost to update one fact" in md.read_text()
    assert html.stat().st_size > 10_000


# -- the table of arms × tasks, run with stand-ins (no training, no model) ----------------------


def test_arm_and_task_tables_name_each_once():
    # The report's columns are the table's arms, in order, each once.
    assert [arm.name for arm in COMPARE_ARMS] == [
        "base",
        "base+rag",
        "fine-tuned",
        "fine-tuned+rag",
    ]
    assert list(ARMS) == [arm.name for arm in COMPARE_ARMS]
    assert [task.name for task in COMPARE_TASKS] == ["knowledge", "json"]
    for task in COMPARE_TASKS:
        assert [arm.name for arm in arms_for(task)] == list(ARMS)
        for arm in COMPARE_ARMS:
            assert arm.adapter is None or arm.adapter in task.adapters
            resolve_prompt_format(task.prompt_format)  # a known format
    # An arm whose fine-tune a task does not provide is skipped for that task.
    bare = replace(COMPARE_TASKS[0], adapters={})
    assert [arm.name for arm in arms_for(bare)] == ["base", "base+rag"]


class _FixedStore:
    """Two relevant hits for any question."""

    def search(self, question, top_k=5, mode="hybrid", source_filter=None):
        return [
            Hit(f"Example {n}.", f"/docs/{n}.md", "line 1", 1.0, f"{n}:0", str(n), similarity=0.9)
            for n in (1, 2)
        ][:top_k]


def test_run_arms_asks_every_arm_once_per_task_with_its_model_and_prompt(monkeypatch):
    asked = []  # (model, messages) per generation

    def fake_generate(model, tokenizer, messages, settings=None, on_text=None):
        asked.append((model, messages))
        json_task = messages[-1]["content"] == "A lamp"
        return Reply('{"item": "lamp"}' if json_task else "5 [1]", 10, 2, 0.01, "stop")

    monkeypatch.setattr("tuneforge.generation.generate", fake_generate)
    settings = GenerationSettings(max_new_tokens=4)
    tasks = {task.name: task for task in COMPARE_TASKS}
    inputs = [
        TaskInputs(
            tasks["knowledge"],
            [{"prompt": "How many?", "answer": "5", "source": "1.md", "answerable": True}],
            _FixedStore(),
            settings,
        ),
        TaskInputs(
            tasks["json"],
            [{"prompt": "A lamp", "system": "Reply in JSON.", "expected": {"item": "lamp"}}],
            _FixedStore(),
            settings,
            {"type": "object", "required": ["item"]},
        ),
    ]

    def model_for(arm, task):
        return "base" if arm.adapter is None else task.adapters[arm.adapter]

    lines = []
    results = run_arms(inputs, model_for, tokenizer=None, log=lines.append)

    pairs = [(r.arm, r.task) for r in results]
    assert pairs == [(arm, task) for task in ("knowledge", "json") for arm in ARMS]
    assert len(lines) == len(asked) == 8
    by_pair = dict(zip(pairs, asked, strict=True))
    assert by_pair[("fine-tuned", "knowledge")][0] == "knowledge-lora"
    assert by_pair[("fine-tuned+rag", "json")][0] == "json-lora"
    assert by_pair[("base+rag", "json")][0] == "base"
    # Without retrieval: the task's own system prompt; with it, the task's prompt format.
    assert by_pair[("base", "knowledge")][1][0]["content"] == QA_SYSTEM_PROMPT
    assert by_pair[("fine-tuned+rag", "knowledge")][1][-1]["content"].startswith("Sources:\n\n[1]")
    assert by_pair[("base", "json")][1][0]["content"] == "Reply in JSON."
    assert by_pair[("base+rag", "json")][1][0]["content"] == (
        "Reply in JSON.\n\nExamples of requests and the JSON they become:\n\n"
        "Example 1.\n\nExample 2."
    )
    metrics = {(r.arm, r.task): r.metrics for r in results}
    assert metrics[("base+rag", "knowledge")]["citation_correct"] == 1.0
    assert "citation_correct" not in metrics[("fine-tuned", "knowledge")]
    assert metrics[("fine-tuned", "json")]["schema_valid"] == 1.0
    assert results[0].samples[0]["verdict"] == "contains_answer=True"


def test_training_configs_take_the_lora_shape_from_the_budget(monkeypatch, tmp_path):
    from tuneforge.evaluate import compare as compare_module

    configs = []
    monkeypatch.setattr(
        "tuneforge.train.train", lambda config, home=None, log=None: configs.append(config)
    )
    budget = replace(compare_module.BUDGETS["quick"], lora_r=4, lora_alpha=8.0)
    args = {"model": "default", "device": "cpu", "home": None, "progress": False}
    for method in ("lora", "full"):
        compare_module._train(
            "run", tmp_path / "d.jsonl", method, 3, budget, tmp_path, args | {"num_threads": None}
        )
    lora, full = configs
    assert (lora.lora_r, lora.lora_alpha, lora.max_steps, lora.method) == (4, 8.0, 3, "lora")
    assert lora.lr == compare_module.LEARNING_RATES["lora"]
    assert full.lr == compare_module.LEARNING_RATES["full"] and full.method == "full"
    assert lora.batch_size == budget.batch_size and lora.out == str(tmp_path / "runs" / "run")
