"""compare() end to end on the tiny model: every arm, forgetting, update cost, report files.

Marked slow: three trainings, two stores and ~40 generations take minutes on 2 CPU cores even
with a tiny model (most of it is loading and the embedding model).
"""

from __future__ import annotations

import pytest

from tuneforge.evaluate.compare import Budget, compare
from tuneforge.evaluate.report import write_report
from tuneforge.evaluate.results import ARMS, load_comparison


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
