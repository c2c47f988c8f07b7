"""The adapter commands: merge, export, and ``generate`` comparing adapters side by side."""

from __future__ import annotations

from tuneforge.cli import main


def test_merge_command_writes_a_plain_model(base_dir, adapters, tmp_path, capsys):
    out = tmp_path / "merged"
    assert (
        main(
            ["merge", "--model", str(base_dir), "--adapter", str(adapters["a"]), "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "merged 14 layers" in printed and "max |logit difference|" in printed
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()


def test_export_command(base_dir, adapters, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    args = ["export", "--model", str(base_dir), "--adapter", str(adapters["b"]), "--format"]
    assert main([*args, "gguf", "--dtype", "f32", "--out", str(out)]) == 0
    assert out.exists() and "wrote" in capsys.readouterr().out


def test_generate_compares_adapters_and_the_base(base_dir, adapters, capsys):
    """``--adapter NAME=DIR`` and a bare ``DIR`` (named after its folder) side by side: each
    block is what ``generate`` replies with that adapter attached alone."""
    from adapter_assets import load_base

    from tuneforge.adapters import attach_adapter
    from tuneforge.generation import GenerationSettings, chat_messages, generate

    args = ["generate", "--model", str(base_dir), "--max-new-tokens", "5", "--quiet"]
    specs = ["--adapter", f"a={adapters['a']}", "--adapter", str(adapters["b"])]
    assert main([*args, *specs, "Hello"]) == 0
    out = capsys.readouterr().out
    labels = ["── base ──", f"── a ({adapters['a']}) ──", f"── b ({adapters['b']}) ──"]
    assert out.index(labels[0]) < out.index(labels[1]) < out.index(labels[2])
    settings = GenerationSettings(max_new_tokens=5)
    for label, adapter in zip(labels, [None, adapters["a"], adapters["b"]], strict=True):
        model, tokenizer = load_base(base_dir)
        if adapter is not None:
            model = attach_adapter(model, adapter)
        expected = generate(model, tokenizer, chat_messages("Hello"), settings).text
        assert f"{label}\n{expected}\n" in out


def test_generate_refuses_an_adapter_name_given_twice(base_dir, adapters, capsys):
    args = ["generate", "--model", str(base_dir), "--adapter", f"a={adapters['a']}"]
    assert main([*args, "--adapter", f"a={adapters['b']}", "Hello"]) == 2
    assert "the name 'a' is given twice" in capsys.readouterr().err


def test_generate_single_adapter_dir_still_works(base_dir, adapters, capsys):
    args = ["generate", "--model", str(base_dir), "--max-new-tokens", "3", "--quiet"]
    assert main([*args, "--adapter", str(adapters["a"]), "Hello"]) == 0
    assert "──" not in capsys.readouterr().out


def test_mismatched_adapter_exits_2_with_one_line(other_base_dir, adapters, tmp_path, capsys):
    args = ["merge", "--model", str(other_base_dir), "--adapter", str(adapters["a"])]
    assert main([*args, "--out", str(tmp_path / "m")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1].startswith("tuneforge: error: ") and "base_identity.json" in lines[-1]
    assert "Traceback" not in "\n".join(lines)
    assert not (tmp_path / "m").exists()
