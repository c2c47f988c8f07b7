"""Adapter folders: what tuneforge saves, interop with plain peft both ways, and refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from adapter_assets import load_base, logits, make_lora, sample_ids

from tuneforge.adapters import attach_adapter
from tuneforge.adapters.identity import IDENTITY_FILE
from tuneforge.errors import AdapterError


def _param_names(model) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def test_saved_folder_carries_identity_and_chat_template(adapters, base_dir):
    from transformers import AutoTokenizer

    folder = adapters["a"]
    identity = json.loads((folder / IDENTITY_FILE).read_text())
    assert identity["model_type"] == "llama"
    assert identity["shapes"]["model.embed_tokens.weight"] == [400, 32]
    assert len(identity["fingerprint"]) == 64
    assert not any("lora" in name for name in identity["shapes"])
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(base_dir).chat_template


def test_tuneforge_folder_loads_in_plain_peft_with_equal_logits(adapters, base_dir):
    from peft import PeftModel

    base, tokenizer = load_base(base_dir)
    ids = sample_ids(tokenizer)
    plain = logits(base, ids)
    ours = logits(attach_adapter(load_base(base_dir)[0], adapters["a"]), ids)
    theirs = logits(PeftModel.from_pretrained(base, str(adapters["a"])).eval(), ids)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert (ours - plain).abs().max() > 1e-2  # the adapter changes the outputs


def test_plain_peft_folder_loads_in_tuneforge_with_equal_logits(adapters, base_dir):
    from peft import PeftModel

    assert not (adapters["peft"] / IDENTITY_FILE).exists()
    base, tokenizer = load_base(base_dir)
    ids = sample_ids(tokenizer)
    theirs = logits(PeftModel.from_pretrained(base, str(adapters["peft"])).eval(), ids)
    ours = logits(attach_adapter(load_base(base_dir)[0], adapters["peft"]), ids)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_bf16_base_accepts_an_adapter_saved_on_fp32(adapters, base_dir):
    base, _ = load_base(base_dir, dtype=torch.bfloat16)
    attach_adapter(base, adapters["a"])  # same weights, coarser dtype: within bf16 rounding


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("other_base", "base weights differ"),
        ("wider_base", "base shapes differ"),
        ("rank", "rank mismatch"),
        ("targets", "target_modules"),
        ("corrupt", "corrupt or truncated safetensors"),
        ("no_config", "no adapter_config.json"),
    ],
)
def test_refusals_name_the_file_and_leave_the_model_unchanged(
    case, expected, adapters, base_dir, other_base_dir, tmp_path
):
    from tiny import save_tiny_model

    folder = shutil.copytree(adapters["a"], tmp_path / "adapter")
    base_dir = base_dir
    if case == "other_base":
        base_dir = other_base_dir
    elif case == "wider_base":
        base_dir = save_tiny_model(tmp_path / "wide", hidden_size=64)
    elif case == "rank":
        _edit_config(folder, r=8)
    elif case == "targets":
        _edit_config(folder, target_modules=["c_attn", "c_proj"])
    elif case == "corrupt":
        _truncate(folder / "adapter_model.safetensors")
    elif case == "no_config":
        (folder / "adapter_config.json").unlink()
    base, tokenizer = load_base(base_dir)
    names, before = _param_names(base), logits(base, sample_ids(tokenizer))
    with pytest.raises(AdapterError, match=expected) as raised:
        attach_adapter(base, folder)
    assert str(folder) in str(raised.value)
    assert _param_names(base) == names
    assert torch.equal(logits(base, sample_ids(tokenizer)), before)


def test_plain_peft_rank_mismatch_is_refused_too(base_dir, tmp_path):
    folder = make_lora(base_dir, tmp_path / "p", r=2, plain_peft=True)
    _edit_config(folder, r=3)
    with pytest.raises(AdapterError, match="r=3"):
        attach_adapter(load_base(base_dir)[0], folder)
