"""compare(): the table of arms × tasks run with stand-ins (fast), and end to end on the tiny
model: every arm, forgetting, update cost, report files.

The end-to-end test is marked slow: three trainings, two stores and ~40 generations take
minutes on 2 CPU cores even with a tiny model (most of it is loading and the embedding model).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
import yaml

from tuneforge.evaluate.arms import COMPARE_ARMS, COMPARE_TASKS, arms_for
from tuneforge.evaluate.compare import Budget, TaskInputs, compare, run_arms
from tuneforge.evaluate.report import write_report
from tuneforge.evaluate.results import ARMS, load_comparison
from tuneforge.evaluate.runner import QA_SYSTEM_PROMPT
from tuneforge.generation import GenerationSettings, Reply
from tuneforge.rag import Hit, resolve_prompt_format
from tuneforge.tasks import sourced_answers

TINY_BUDGET = Budget(
    kb_answerable=2,
    kb_unanswerable=1,
    kb_trained=1,
    json_prompts=1,
    general_questions=1,
    knowledge_steps=1,
    raft_epochs=0.01,
    raft_min_steps=1,
    json_steps=1,
    json_examples=10,
    dpo_steps=1,
    batch_size=2,
    max_new_tokens=4,
    json_max_new_tokens=4,
    combined_max_new_tokens=4,
    raft_examples_per_question=1,
)


@pytest.mark.slow
def test_compare_runs_every_arm_on_the_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "compare"
    comparison = compare(
        out,
        budget=TINY_BUDGET,
        model=str(tiny_model_dir),
        device="cpu",
        progress=False,
        num_threads=1,
        log=lambda _: None,
    )
    held_out = {(a.arm, a.task) for a in comparison.arms if a.split == "held-out"}
    assert held_out == {(arm.name, task.name) for task in COMPARE_TASKS for arm in arms_for(task)}
    trained = {(a.arm, a.task) for a in comparison.arms if a.split == "trained"}
    assert trained == {
        (arm, task)
        for task in ("knowledge", "combined")
        for arm in ("fine-tuned", "fine-tuned+rag", "raft+rag")
    }
    assert [row.method for row in comparison.forgetting] == ["base", "full", "lora"]
    assert comparison.update_cost is not None and comparison.update_cost.reingest_seconds > 0
    assert [c.run for c in comparison.loss_curves] == [
        "knowledge-lora",
        "knowledge-full",
        "knowledge-raft",
        "json-lora",
        "json-dpo",
    ]
    dpo_config = yaml.safe_load((out / "runs" / "json-dpo" / "config.yaml").read_text())
    assert dpo_config["objective"] == "dpo"
    assert dpo_config["init_adapter"] == str(out / "runs" / "json-lora" / "adapter")
    # The RAFT data holds both target shapes, each built over the compare's own store.
    raft_lines = (out / "data" / "raft.jsonl").read_text().splitlines()
    targets = [json.loads(line)["messages"][-1]["content"] for line in raft_lines]
    assert any(t.startswith('{"answer": ') for t in targets)
    assert any(re.search(r"\[\d\]$", t) for t in targets)
    reports = json.loads((out / "data" / "raft.report.json").read_text())
    assert [r["settings"]["target_format"] for r in reports] == ["cited", "json"]
    assert sum(r["examples"] for r in reports) == len(raft_lines)
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
        "raft+rag",
        "fine-tuned+dpo",
        "base+constrained",
        "fine-tuned+constrained",
    ]
    assert list(ARMS) == [arm.name for arm in COMPARE_ARMS]
    assert [task.name for task in COMPARE_TASKS] == ["knowledge", "json", "combined"]
    for task in COMPARE_TASKS:
        for arm in arms_for(task):
            assert arm.adapter is None or arm.adapter in task.adapters
        resolve_prompt_format(task.prompt_format)  # a known format
    # The form task has no RAFT fine-tune: its arm is skipped there; only the form task (its
    # replies follow a JSON schema, it has preference pairs) runs the DPO and constrained arms.
    assert [arm.name for arm in arms_for(COMPARE_TASKS[1])] == [*ARMS[:4], *ARMS[5:]]
    assert [arm.name for arm in arms_for(COMPARE_TASKS[2])] == list(ARMS[:5])
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
    asked = []  # (model, messages, logits processor) per decoded row

    def fake_row(tokenizer, messages, settings=None, logits_processor=None):
        return SimpleNamespace(messages=messages, processor=logits_processor)

    def fake_generate_rows(model, tokenizer, rows):
        return [fake_reply(model, row.messages, row.processor) for row in rows]

    def fake_reply(model, messages, processor):
        asked.append((model, messages, processor))
        if messages[-1]["content"] == "A lamp":
            text = '{"item": "lamp"}'
        elif sourced_answers.SYSTEM_PROMPT in messages[0]["content"]:
            cited = messages[-1]["content"].startswith("Sources:")
            text = json.dumps({"answer": "5", "source": "[1]" if cited else None})
        else:
            text = "5 [1]"
        return Reply(text, 10, 2, 0.01, "stop")

    class FakeCompiler:  # the grammar the constrained arms decode under, by model
        def __init__(self, model):
            self.model = model

        def compile(self, schema):
            return SimpleNamespace(
                row_processor=lambda: ("grammar", self.model, schema["required"])
            )

    monkeypatch.setattr("tuneforge.generation.chat_row", fake_row)
    monkeypatch.setattr("tuneforge.generation.generate_rows", fake_generate_rows)
    monkeypatch.setattr(
        "tuneforge.generation.JsonSchemaCompiler.for_model", lambda model, tok: FakeCompiler(model)
    )
    settings = GenerationSettings(max_new_tokens=4)
    tasks = {task.name: task for task in COMPARE_TASKS}
    question = {"prompt": "How many?", "answer": "5", "source": "1.md", "answerable": True}
    trained = {"prompt": "How few?", "answer": "2", "source": "2.md", "answerable": True}
    combined = {"system": sourced_answers.SYSTEM_PROMPT, "answer_field": "answer"}
    inputs = [
        TaskInputs(tasks["knowledge"], [question], _FixedStore(), settings, None, [trained]),
        TaskInputs(
            tasks["json"],
            [{"prompt": "A lamp", "system": "Reply in JSON.", "expected": {"item": "lamp"}}],
            _FixedStore(),
            settings,
            {"type": "object", "required": ["item"]},
        ),
        TaskInputs(
            tasks["combined"],
            [question | combined],
            _FixedStore(),
            settings,
            sourced_answers.SCHEMA,
        ),
    ]

    def model_for(arm, task):
        return "base" if arm.adapter is None else task.adapters[arm.adapter]

    lines = []
    results = run_arms(inputs, model_for, tokenizer=None, log=lines.append)

    triples = [(r.arm, r.task, r.split) for r in results]
    fine_tuned = ("fine-tuned", "fine-tuned+rag", "raft+rag")
    expected = []
    arms = {"knowledge": ARMS[:5], "json": [*ARMS[:4], *ARMS[5:]], "combined": ARMS[:5]}
    for task in ("knowledge", "json", "combined"):
        for arm in arms[task]:
            expected.append((arm, task, "held-out"))
            if task == "knowledge" and arm in fine_tuned:
                expected.append((arm, task, "trained"))  # memorised: only with trained items
    assert triples == expected
    assert len(lines) == len(asked) == len(expected)
    by_triple = dict(zip(triples, asked, strict=True))
    assert by_triple[("fine-tuned", "knowledge", "held-out")][0] == "knowledge-lora"
    assert by_triple[("raft+rag", "knowledge", "trained")][0] == "knowledge-raft"
    assert by_triple[("raft+rag", "combined", "held-out")][0] == "knowledge-raft"
    assert by_triple[("fine-tuned+rag", "json", "held-out")][0] == "json-lora"
    assert by_triple[("base+rag", "json", "held-out")][0] == "base"
    # The constrained arms decode under the task's schema, on their own model; no other does.
    assert by_triple[("base+constrained", "json", "held-out")][2] == ("grammar", "base", ["item"])
    assert by_triple[("fine-tuned+constrained", "json", "held-out")][0] == "json-lora"
    assert by_triple[("fine-tuned+constrained", "json", "held-out")][2][1] == "json-lora"
    assert by_triple[("base+constrained", "json", "held-out")][1][0]["content"] == "Reply in JSON."
    assert [t for t, (_, _, grammar) in by_triple.items() if grammar] == [
        ("base+constrained", "json", "held-out"),
        ("fine-tuned+constrained", "json", "held-out"),
    ]
    assert by_triple[("raft+rag", "knowledge", "trained")][1][-1]["content"].endswith(
        "Question: How few?"
    )
    # Without retrieval: the task's own system prompt; with it, the task's prompt format.
    assert by_triple[("base", "knowledge", "held-out")][1][0]["content"] == QA_SYSTEM_PROMPT
    assert by_triple[("raft+rag", "knowledge", "held-out")][1][-1]["content"].startswith(
        "Sources:\n\n[1]"
    )
    assert by_triple[("base", "json", "held-out")][1][0]["content"] == "Reply in JSON."
    assert by_triple[("base+rag", "json", "held-out")][1][0]["content"] == (
        "Reply in JSON.\n\nExamples of requests and the JSON they become:\n\n"
        "Example 1.\n\nExample 2."
    )
    # The combined task: the JSON instruction is the client's system text after the sources'.
    combined_rag = by_triple[("raft+rag", "combined", "held-out")][1][0]["content"]
    assert combined_rag.endswith("\n\n" + sourced_answers.SYSTEM_PROMPT)
    assert combined_rag.startswith("Answer the question using only the numbered sources.")
    metrics = {(r.arm, r.task, r.split): r.metrics for r in results}
    assert metrics[("base+rag", "knowledge", "held-out")]["citation_correct"] == 1.0
    assert metrics[("raft+rag", "knowledge", "trained")]["contains_answer"] == 0.0  # "5" != "2"
    assert "citation_correct" not in metrics[("fine-tuned", "knowledge", "held-out")]
    assert metrics[("fine-tuned", "json", "held-out")]["schema_valid"] == 1.0
    assert metrics[("base", "combined", "held-out")]["correct_and_valid"] == 1.0
    assert metrics[("raft+rag", "combined", "held-out")]["citation_correct"] == 1.0
    assert results[0].samples[0]["verdict"] == "contains_answer=True"
    assert results[0].intervals["contains_answer"].n == 1


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
    # The DPO run: the LoRA shape, its own objective and lr, from the supervised adapter.
    dpo = {**compare_module.DPO, "init_adapter": str(tmp_path / "sft")}
    compare_module._train(
        "dpo", tmp_path / "p.jsonl", "lora", 2, budget, tmp_path, args | {"num_threads": None}, 256,
        dpo,
    )  # fmt: skip
    (dpo_config,) = configs[2:]
    assert (dpo_config.objective, dpo_config.beta, dpo_config.lr) == ("dpo", 0.1, 5e-5)
    assert dpo_config.init_adapter == str(tmp_path / "sft") and dpo_config.lora_r == 4


@pytest.mark.slow
def test_compare_on_the_users_documents_questions_and_form_task(tiny_model_dir, tmp_path):
    from tuneforge.evaluate.recommendation import recommendation

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nThe Orla pump costs 70 euros.\n")
    (docs / "depot.txt").write_text("Depot\n\nThe Vesk depot opens at 06:45.\n")
    questions = tmp_path / "qa.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {
                    "question": "How much is the Orla pump?",
                    "answer": "70 euros",
                    "source": "pump.md",
                },
                {"question": "What does the Orla pump cost?", "answer": "70 euros"},
                {
                    "question": "When does the Vesk depot open?",
                    "answer": "06:45",
                    "source": "depot.txt",
                },
                {"question": "At what time does the depot open?", "answer": "06:45"},
                {"question": "What colour is the Orla pump?", "answer": None},
                {"question": "Who runs the Vesk depot?", "answer": None},
            ]
        )
    )
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object", "required": ["n"]}')
    train = tmp_path / "task.jsonl"
    train.write_text(
        "\n".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"number {i}"},
                        {"role": "assistant", "content": json.dumps({"n": i})},
                    ]
                }
            )
            for i in range(6)
        )
    )
    out = tmp_path / "compare"
    comparison = compare(
        out,
        budget=TINY_BUDGET,
        model=str(tiny_model_dir),
        device="cpu",
        progress=False,
        num_threads=1,
        log=lambda _: None,
        docs=docs,
        questions=questions,
        train=train,
        schema=schema,
        holdout=0.4,
    )
    tasks = {a.task for a in comparison.arms}
    assert tasks == {"knowledge", "json"}  # the bundled combined task is not run on user data
    assert {a.arm for a in comparison.arms if a.task == "knowledge"} == set(ARMS[:5])
    # The user's form task has no preference pairs: no DPO run, no DPO arm; constrained arms run.
    assert {a.arm for a in comparison.arms if a.task == "json"} == {
        "base", "base+rag", "fine-tuned", "fine-tuned+rag", "base+constrained",
        "fine-tuned+constrained",
    }  # fmt: skip
    assert not (out / "runs" / "json-dpo").exists()
    assert comparison.settings["questions_held_out"] == 3  # 2 of 4 answerable, 1 of 2 not
    assert "your documents are not edited" in comparison.update_cost.fact
    assert not (out / "kb_docs").exists()  # the user's documents are not copied
    assert (docs / "pump.md").read_text() == "# Pump\n\nThe Orla pump costs 70 euros.\n"
    knowledge = comparison.result("raft+rag", "knowledge")
    assert knowledge.intervals["contains_answer"].n == 2
    assert "too few questions" in recommendation(comparison) or "no difference" in (
        recommendation(comparison)
    )
