"""The report renders from fixed numbers: table cells, rule-based recommendation, plots embedded."""

from __future__ import annotations

import base64
import re

import pytest
from eval_fixed_numbers import fixed_comparison

from tuneforge.evaluate.report import classic_table, recommendation, write_report
from tuneforge.evaluate.results import load_comparison, save_comparison


def test_classic_table_cells_and_best_arm():
    rows = classic_table(fixed_comparison())
    assert [row.best for row in rows] == ["base+rag", "fine-tuned", "base+rag", "base+rag", "base"]
    assert rows[0].cells == ["10%", "80%", "30%", "78%"]
    assert rows[3].cells == ["n/a", "0.50 s", "150 s", "0.50 s"]
    assert rows[4].cells[1] == "1.60 s (+0.60)"


def test_recommendation_follows_the_numbers():
    line = recommendation(fixed_comparison())
    assert line.startswith("Recommendation: retrieve for facts (base+RAG 80% vs fine-tuned 30%")
    assert "fine-tune for format (fine-tuned 90% vs base+rag 20% schema-valid)" in line
    assert "do both when you need both" in line
    assert "(300×)" in line

    flipped = fixed_comparison()
    for result in flipped.arms:
        if result.arm == "fine-tuned" and result.task == "knowledge":
            result.metrics["contains_answer"] = 0.82  # within the 5-point margin of base+RAG
        if result.arm.startswith("fine-tuned") and result.task == "json":
            result.metrics["schema_valid"] = 0.05
    line = recommendation(flipped)
    assert "facts: no clear winner" in line
    assert "no need to fine-tune for format" in line
    assert "not the best of both" in line


def test_write_report_renders_markdown_and_self_contained_html(tmp_path):
    comparison = fixed_comparison()
    save_comparison(comparison, tmp_path / "results.json")
    reloaded = load_comparison(tmp_path / "results.json")
    assert reloaded == comparison

    md_path, html_path = write_report(reloaded, tmp_path)
    markdown = md_path.read_text()
    assert (
        "| Adding knowledge (contains answer, answerable KB questions) ↑ | 10% | 80% | 30% | 78% | base+rag |"
        in markdown
    )
    assert "The claim that full fine-tuning forgets more than LoRA holds" in markdown
    assert "full fine-tuning (30 steps) moved general perplexity by +40.0%" in markdown

    page = html_path.read_text()
    assert "<b>A</b>" not in page and "&lt;b&gt;A&lt;/b&gt;" in page  # replies are escaped
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_comparison_errors_name_the_file(tmp_path):
    from tuneforge.errors import DataError

    with pytest.raises(DataError, match="no such file"):
        load_comparison(tmp_path / "missing.json")
    bad = tmp_path / "results.json"
    bad.write_text('{"model": "x"}')
    with pytest.raises(DataError, match="missing or malformed field"):
        load_comparison(bad)
