import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.cli import main
from tuneforge.cli.options import parse_adapter_specs
from tuneforge.errors import ConfigError


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("generate", "chat", "models", "serve"):
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


def test_generate_prints_the_reply_of_generate(tiny_model_dir, capsys):
    """What the user sees is the library's reply for the same prompt and settings."""
    from tuneforge.generation import GenerationSettings, chat_messages, generate
    from tuneforge.models import load_model

    args = ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "6", "--quiet"]
    assert main([*args, "--system", "Be brief.", "hi"]) == 0
    printed = capsys.readouterr().out
    loaded = load_model(str(tiny_model_dir))
    messages = chat_messages("hi", system="Be brief.")
    reply = generate(loaded.model, loaded.tokenizer, messages, GenerationSettings(max_new_tokens=6))
    assert reply.text and reply.completion_tokens == 6
    assert printed == reply.text + "\n"


def test_models_lists_default(capsys):
    assert main(["models"]) == 0
    assert "default" in capsys.readouterr().out


def test_chat_repl(tiny_model_dir, monkeypatch, capsys):
    answers = iter(["hello", "/reset", "again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.count("assistant>") == 2


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["json=runs/json/adapter"], {"json": "runs/json/adapter"}),
        ([" json = runs/json/adapter "], {"json": "runs/json/adapter"}),
        (["runs/terse/adapter"], {"terse": "runs/terse/adapter"}),  # named after the run
        (["runs/terse"], {"terse": "runs/terse"}),
        (["b=x=y"], {"b": "x=y"}),  # the folder is everything after the first '='
        (["runs/x=y/adapter"], {"x=y": "runs/x=y/adapter"}),  # '/' before '=': a bare DIR
        (["a=runs/one/adapter", "runs/two/adapter"], {"a": "runs/one/adapter", "two": "runs/two/adapter"}),
    ],
)  # fmt: skip
def test_adapter_specs(specs, expected):
    parsed = parse_adapter_specs(specs)
    assert parsed == {name: Path(folder) for name, folder in expected.items()}
    assert list(parsed) == list(expected)  # load order is the order given


def test_an_existing_folder_with_equals_in_its_name_is_a_bare_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k=v").mkdir()
    assert parse_adapter_specs(["k=v"]) == {"k=v": Path("k=v")}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["=runs/a"], "expected NAME=DIR or DIR"),
        (["a="], "expected NAME=DIR or DIR"),
        ([" = "], "expected NAME=DIR or DIR"),
        ([""], "expected NAME=DIR or DIR"),
        (["a=x", "a=y"], "the name 'a' is given twice"),
        (["runs/a/adapter", "old/a/adapter"], "the name 'a' is given twice"),
    ],
)
def test_adapter_specs_refuse_mistakes(specs, message):
    with pytest.raises(ConfigError, match=message):
        parse_adapter_specs(specs)


def test_every_command_ends_quietly_when_stdout_is_closed():
    """``tuneforge ... | head`` style: the reader went away; exit 141, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "plan", "--model", "llama-7b", "--method", "lora",
         "--batch-size", "1", "--max-length", "512"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # before the plan is printed: the process is still importing
    assert proc.wait(timeout=60) == 141
    assert b"Traceback" not in proc.stderr.read()
