import subprocess
import sys

from tuneforge.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    for command in ("generate", "chat", "models"):
        assert command in out


def test_missing_model_exits_2_with_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli", "generate", "--model", "/nonexistent", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tuneforge: error: /nonexistent")


def test_generate_tiny_model(tiny_model_dir, capsys):
    assert (
        main(["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--quiet", "hi"])
        == 0
    )


def test_models_lists_default(capsys):
    assert main(["models"]) == 0
    assert "default" in capsys.readouterr().out


def test_chat_repl(tiny_model_dir, monkeypatch, capsys):
    answers = iter(["hello", "/reset", "again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.count("assistant>") == 2
