"""`tuneforge eval` and `tuneforge compare --report-only` through the CLI main."""

from __future__ import annotations

import json

from tuneforge.cli import main


def test_eval_prints_table_and_writes_json(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "eval.jsonl"
    data.write_text(
        json.dumps({"text": "The capital of France is Paris."})
        + "\n"
        + json.dumps({"question": "Capital of Norway?", "answer": "Oslo"})
        + "\n"
    )
    out = tmp_path / "result.json"
    code = main(
        [
            "eval",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--metric",
            "perplexity",
            "contains_answer",
            "latency",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "contains_answer" in printed
    saved = json.loads(out.read_text())
    assert saved["metrics"]["n_contains_answer"] == 1
    assert len(saved["rows"]) == 1


def test_eval_bad_data_is_a_one_line_error(tmp_path, capsys):
    data = tmp_path / "eval.jsonl"
    data.write_text("not json\n")
    assert main(["eval", "--data", str(data)]) == 2
    assert "eval.jsonl:1: invalid JSON" in capsys.readouterr().err


def test_compare_report_only_rerenders(tmp_path, capsys):
    from eval_fixed_numbers import fixed_comparison

    from tuneforge.evaluate.results import save_comparison

    save_comparison(fixed_comparison(), tmp_path / "results.json")
    assert main(["compare", "--out", str(tmp_path), "--report-only"]) == 0
    assert "Recommendation: facts: use RAFT fine-tuning plus retrieval" in capsys.readouterr().out
    assert (tmp_path / "report.html").exists()
    assert main(["compare", "--out", str(tmp_path / "none"), "--report-only"]) == 2
