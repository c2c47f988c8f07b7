"""The report renders from fixed numbers: cells with intervals, the rule-based recommendation
(a winner only where intervals separate), plots embedded."""

from __future__ import annotations

import base64
import re

import pytest
from eval_fixed_numbers import KNOWLEDGE, fixed_comparison, with_rate

from tuneforge.evaluate.recommendation import recommendation
from tuneforge.evaluate.report import classic_table, write_report
from tuneforge.evaluate.results import load_comparison, save_comparison


def test_classic_table_cells_carry_intervals_and_counts():
    rows = classic_table(fixed_comparison())
    by_label = {row.label.split(" (")[0]: row for row in rows}
    knowledge = by_label["Adding knowledge"]
    assert knowledge.label.endswith("n=100 ↑")
    assert knowledge.cells == [
        "10% [6–17%]",
        "80% [71–87%]",
        "30% [22–40%]",
        "78% [69–85%]",
        "95% [89–98%]",
    ]
    assert knowledge.best == "raft+rag"  # 89–98% clears base+RAG's 71–87%
    # Overlapping intervals: the best column lists the arms the data cannot tell apart.
    assert by_label["Reducing hallucination"].best == "raft+rag ≈ base+rag ≈ fine-tuned+rag"
    assert by_label["Teaching a format"].best == "fine-tuned ≈ fine-tuned+rag"
    assert by_label["Facts in a strict format"].cells[-1] == "70% [60–78%]"
    assert by_label["Cost to update one fact"].cells == [
        "n/a",
        "0.50 s",
        "150 s",
        "0.50 s",
        "0.50 s",
    ]
    assert by_label["Latency per answer"].cells[1] == "1.60 s (+0.60)"


def test_recommendation_names_a_lever_only_where_intervals_separate():
    line = recommendation(fixed_comparison())
    assert line.startswith(
        "Recommendation: facts: use RAFT fine-tuning plus retrieval (raft+rag 95% [89–98%] "
        "contains-answer vs next best base+rag 80% [71–87%], 100 held-out questions)"
    )
    assert "citation-correct: raft+rag 90% [83–94%] beats base+rag 70% [60–78%]" in line
    # 90% vs 75% refusal on 40 questions: the intervals overlap, so no winner is named.
    assert (
        "refusal: too few questions to tell raft+rag 90% [77–96%] from base+rag 75% [60–86%] "
        "(40 questions; the 95% intervals overlap); telling a difference of this size apart "
        "needs about 99 questions per arm*"
    ) in line
    assert line.endswith(
        " (*the count at which the two Wilson intervals stop overlapping; away from 0% and 100%, "
        "n ≈ (1.96·(√(p₁(1−p₁)) + √(p₂(1−p₂))) / (p₁ − p₂))².)"
    )
    assert "fine-tune for format (fine-tuned 90% [80–95%] vs base+rag 20% [12–32%]" in line
    assert "facts in a strict format: use RAFT fine-tuning plus retrieval" in line
    assert "trained on and 30% [22–40%] of held-out ones" in line
    assert "(300×)" in line


def test_twenty_questions_and_five_points_is_too_small_to_tell():
    comparison = fixed_comparison()
    for arm, (contains, *_) in KNOWLEDGE.items():
        with_rate(comparison, arm, "knowledge", "contains_answer", min(contains, 0.5), 20)
    with_rate(comparison, "base+rag", "knowledge", "contains_answer", 0.60, 20)
    with_rate(comparison, "raft+rag", "knowledge", "contains_answer", 0.65, 20)
    line = recommendation(comparison)
    assert "facts: too few questions to tell raft+rag 65% [43–82%] from base+rag 60%" in line
    assert "(20 questions; the 95% intervals overlap)" in line
    assert "needs about 1,441 questions per arm" in line
    assert "use RAFT" not in line.split(";")[0]
    assert classic_table(comparison)[0].best.startswith("raft+rag ≈ base+rag")


def test_format_verdicts_both_ways_and_equal_rates():
    comparison = fixed_comparison()
    for arm in ("fine-tuned", "fine-tuned+rag"):
        with_rate(comparison, arm, "json", "schema_valid", 0.0, 60)
    assert "no need to fine-tune for format (base+rag 20% [12–32%] vs fine-tuned 0% [0–6%]" in (
        recommendation(comparison)
    )
    with_rate(comparison, "fine-tuned", "json", "schema_valid", 0.20, 60)
    assert "format: no difference between base+rag and fine-tuned (20% each on 60 questions)" in (
        recommendation(comparison)
    )


def test_user_data_without_a_form_task_says_how_to_measure_it():
    comparison = fixed_comparison()
    comparison.arms = [a for a in comparison.arms if a.task not in ("json", "combined")]
    line = recommendation(comparison)
    assert "format: not measured (give compare --train FILE --schema FILE)" in line
    assert "strict format" not in line
    labels = [row.label for row in classic_table(comparison)]
    assert not any(label.startswith(("Teaching a format", "Facts in a strict")) for label in labels)


def test_write_report_renders_markdown_and_self_contained_html(tmp_path):
    comparison = fixed_comparison()
    save_comparison(comparison, tmp_path / "results.json")
    reloaded = load_comparison(tmp_path / "results.json")
    assert reloaded == comparison  # intervals and splits round-trip

    md_path, html_path = write_report(reloaded, tmp_path)
    markdown = md_path.read_text()
    assert (
        "| Adding knowledge (contains answer, answerable questions), n=100 ↑ | 10% [6–17%] | "
        "80% [71–87%] | 30% [22–40%] | 78% [69–85%] | 95% [89–98%] | raft+rag |"
    ) in markdown
    assert "| knowledge | fine-tuned | contains_answer | 90% [70–97%] | 30% [22–40%] |" in markdown
    assert "| knowledge | trained | contains_answer (n=20) | n/a | n/a | 90% [70–97%] |" in markdown
    assert "Wilson score intervals for proportions" in markdown
    assert "The claim that full fine-tuning forgets more than LoRA holds" in markdown
    assert "full fine-tuning (30 steps) moved general perplexity by +40.0%" in markdown

    page = html_path.read_text()
    assert "<b>A</b>" not in page and "&lt;b&gt;A&lt;/b&gt;" in page  # replies are escaped
    assert "raft+rag" in page and "Memorised vs generalised" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside
    assert not list(tmp_path.glob(".*.tmp"))


def test_results_saved_before_intervals_get_them_from_rate_and_count(tmp_path):
    comparison = fixed_comparison()
    for result in comparison.arms:
        result.intervals = {}
    assert classic_table(comparison)[0].cells[1] == "80% [71–87%]"


def test_load_comparison_errors_name_the_file(tmp_path):
    from tuneforge.errors import DataError

    with pytest.raises(DataError, match="no such file"):
        load_comparison(tmp_path / "missing.json")
    bad = tmp_path / "results.json"
    bad.write_text('{"model": "x"}')
    with pytest.raises(DataError, match="missing or malformed field"):
        load_comparison(bad)


def test_demo_step_prints_the_raft_arm_and_the_recommendation(tmp_path, monkeypatch, capsys):
    from tuneforge import demo

    monkeypatch.setattr("tuneforge.evaluate.compare", lambda *a, **k: fixed_comparison())
    demo.step_compare(tmp_path, "cpu", "quick")
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "base+rag" in line)
    assert header.split() == ["base", "base+rag", "fine-tuned", "fine-tuned+rag", "raft+rag"]
    strict = next(line for line in out.splitlines() if line.startswith("Facts in a strict format"))
    assert strict.split()[-5:] == ["0%", "5%", "10%", "20%", "70%"]
    assert "\nRecommendation: facts: use RAFT fine-tuning plus retrieval" in out
    assert (tmp_path / "compare" / "report.md").is_file()


def test_preference_tuning_is_named_only_where_its_interval_clears_the_fine_tunes():
    from tuneforge.evaluate.results import ArmResult

    comparison = fixed_comparison()
    assert "preference tuning" not in recommendation(comparison)  # DPO not run
    comparison.arms.append(ArmResult("fine-tuned+dpo", "json", {}, [], "held-out", {}))
    with_rate(comparison, "fine-tuned", "json", "field_accuracy", 0.60, 60)
    with_rate(comparison, "fine-tuned+dpo", "json", "field_accuracy", 0.65, 60)
    assert (
        "preference tuning (field accuracy): too few questions to tell fine-tuned+dpo 65% "
        "[52–76%] from fine-tuned 60% [47–71%]"
    ) in recommendation(comparison)
    with_rate(comparison, "fine-tuned+dpo", "json", "field_accuracy", 0.95, 60)
    assert "preference tuning helps: fine-tuned+dpo 95% [86–98%] vs fine-tuned 60%" in (
        recommendation(comparison)
    )
    with_rate(comparison, "fine-tuned+dpo", "json", "field_accuracy", 0.20, 60)
    assert "preference tuning does not help here: fine-tuned+dpo 20%" in recommendation(comparison)
