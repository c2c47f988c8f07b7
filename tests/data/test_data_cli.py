"""``tuneforge data inspect`` and ``tuneforge data validate`` on the tiny model and files."""

from __future__ import annotations

import json

import pytest

from tuneforge.cli import main


def test_inspect_prints_counts_lengths_loss_share_packing_and_a_marked_example(
    tiny_model_dir, capsys
):
    code = main(
        ["data", "inspect", "demo:test", "--model", str(tiny_model_dir), "--max-length", "256"]
    )
    out = capsys.readouterr().out
    assert code == 0
    for words in (
        "rows read: 240",
        "token lengths",
        "p50",
        "p99",
        "tokens carrying loss",
        "efficiency",
    ):
        assert words in out
    marked = out.split("⟦")[-1].split("⟧")[0]  # the last supervised run: the reply
    assert marked.startswith('{"intent": ') and marked.endswith("}<|im_end|>")


def test_validate_reports_file_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path.write_text(json.dumps(good) + "\n{broken\n", encoding="utf-8")
    assert main(["data", "validate", str(path)]) == 2
    assert f"{path}:2: invalid JSON" in capsys.readouterr().err
    assert main(["data", "validate", str(path), "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "1 valid examples" in out and "1 invalid skipped" in out and f"{path}:2" in out


def test_validate_with_a_model_tokenizes(tiny_model_dir, capsys):
    assert main(["data", "validate", "demo:test", "--model", str(tiny_model_dir)]) == 0
    assert "240 train" in capsys.readouterr().out


def test_data_options_are_generated_from_data_config(tiny_model_dir, tmp_path, capsys):
    """Every DataConfig field but the path is an option of data inspect, with its help."""
    from dataclasses import fields

    from tuneforge.data import DataConfig

    with pytest.raises(SystemExit):
        main(["data", "inspect", "--help"])
    help_text = capsys.readouterr().out
    for item in fields(DataConfig):
        if item.name != "path":
            assert f"--{item.name.replace('_', '-')}" in help_text, item.name
    assert "keep exact duplicate examples" in help_text  # the field's docstring entry

    path = tmp_path / "d.jsonl"
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    assert main(["data", "validate", str(path), "--keep-duplicates"]) == 0
    assert "2 valid examples" in capsys.readouterr().out
    assert main(["data", "validate", str(path)]) == 0
    assert "1 duplicates removed" in capsys.readouterr().out
