"""GGUF export of a model with an adapter merged in: read back, Modelfile, report, refusals."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from adapter_assets import logits, sample_ids

from tuneforge.adapters import export_gguf, merge_adapter
from tuneforge.cli import main
from tuneforge.errors import ModelError
from tuneforge.models import load_model


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize(("dtype", "tolerance"), [("f32", 1e-3), ("f16", 1e-2)])
def test_export_with_adapter_reads_back_with_matching_logits(
    dtype, tolerance, base_dir, adapters, tmp_path
):
    import gguf

    report = export_gguf(
        str(base_dir), adapters["a"], tmp_path / "model.gguf", dtype=dtype, check=False
    )
    out = report.gguf.path
    merge_adapter(str(base_dir), adapters["a"], tmp_path / "merged")
    source = load_model(str(tmp_path / "merged"), dtype="float32", device="cpu")
    back = load_model(str(out), dtype="float32", device="cpu", progress=False)
    ids = sample_ids(source.tokenizer)
    assert _relative_error(logits(back.model, ids), logits(source.model, ids)) <= tolerance
    assert back.tokenizer.chat_template == source.tokenizer.chat_template
    messages = [{"role": "user", "content": "Order 2 lamps, ship to Oslo"}]
    rendered = [
        t.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        for t in (source.tokenizer, back.tokenizer)
    ]
    assert rendered[0] == rendered[1]
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"  # the tiny tokenizer's
    matrix = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    assert matrix.tensor_type.name == dtype.upper()
    assert not list(tmp_path.glob(".merge-*"))  # the temporary merged folder is gone
    umask = os.umask(0o022)
    os.umask(umask)
    # The user's umask (an Ollama service running as another user must read it), not 0600.
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert report.modelfile == tmp_path / "model.Modelfile"
    assert report.modelfile.read_text().startswith("# Ollama Modelfile")
    assert "FROM ./model.gguf\n" in report.modelfile.read_text()
    assert stat.S_IMODE(report.modelfile.stat().st_mode) == 0o666 & ~umask
    assert report.ollama_command == f"ollama create model -f {report.modelfile}"
    assert report.comparison is None and report.not_measured == "skipped (--no-check)"


def test_export_refuses_an_unknown_dtype(base_dir, tmp_path):
    with pytest.raises(ModelError, match="f16, bf16, q8_0"):
        export_gguf(str(base_dir), None, tmp_path / "x.gguf", dtype="q4")
    assert not (tmp_path / "x.gguf").exists()


def test_export_without_llama_cpp_says_not_measured(base_dir, tmp_path, monkeypatch, capsys):
    import tuneforge.adapters.export as export_module

    monkeypatch.setattr(export_module, "llama_cpp_missing", lambda: "llama-cpp-python missing")
    out = tmp_path / "m.gguf"
    assert main(["export", "--model", str(base_dir), "--dtype", "q8_0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "not measured: llama-cpp-python missing" in printed
    assert f"wrote {out} (" in printed and "q8_0, llama, pre-tokenizer gpt-2" in printed
    assert f"ollama create m -f {tmp_path / 'm.Modelfile'}" in printed


def test_export_command_measures_under_llama_cpp(base_dir, adapters, tmp_path, capsys):
    from tuneforge.export.llama_cpp_check import llama_cpp_missing

    if llama_cpp_missing():
        pytest.skip(f"llama.cpp runtime missing: {llama_cpp_missing()}")
    out = tmp_path / "m.gguf"
    args = ["export", "--model", str(base_dir), "--adapter", str(adapters["a"]), "--out", str(out)]
    assert main([*args, "--dtype", "f16"]) == 0
    printed = capsys.readouterr().out
    assert "under llama.cpp on 3 sample prompts: max |logit difference|" in printed
    assert "same tokenization 3/3" in printed
