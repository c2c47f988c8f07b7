"""GGUF export: read back by gguf and transformers with the source's logits and chat template."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from adapter_assets import logits, sample_ids

from tuneforge.adapters import export_gguf, merge_adapter
from tuneforge.errors import ModelError
from tuneforge.models import load_model


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize(("dtype", "tolerance"), [("f32", 1e-3), ("f16", 1e-2)])
def test_export_with_adapter_reads_back_with_matching_logits(
    dtype, tolerance, base_dir, adapters, tmp_path
):
    import gguf

    out = export_gguf(str(base_dir), adapters["a"], tmp_path / "model.gguf", dtype=dtype)
    merge_adapter(str(base_dir), adapters["a"], tmp_path / "merged")
    source = load_model(str(tmp_path / "merged"), device="cpu")
    back = load_model(str(out), device="cpu", progress=False)
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
    matrix = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    assert matrix.tensor_type.name == dtype.upper()
    assert not list(tmp_path.glob(".merge-*"))  # the temporary merged folder is gone
    umask = os.umask(0o022)
    os.umask(umask)
    # The user's umask (an Ollama service running as another user must read it), not 0600.
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_export_refuses_an_unknown_dtype(base_dir, tmp_path):
    with pytest.raises(ModelError, match="f16, f32"):
        export_gguf(str(base_dir), None, tmp_path / "x.gguf", dtype="q4")
    assert not (tmp_path / "x.gguf").exists()
