"""Preparing the model per method: what is trainable, what is quantized."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneforge.data import DataConfig, make_batches, prepare_data
from tuneforge.errors import ConfigError
from tuneforge.train.config import TrainConfig
from tuneforge.train.loop import evaluate_loss
from tuneforge.train.loss import supervised_loss_sum
from tuneforge.train.methods import prepare_model

CPU = torch.device("cpu")
LINEARS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def _config(model_dir, **kwargs) -> TrainConfig:
    return TrainConfig(model=str(model_dir), progress=False, **{"dtype": "float32", **kwargs})


def test_lora_targets_every_linear_but_the_head(tiny_model_dir):
    prepared = prepare_model(_config(tiny_model_dir, method="lora"), CPU)
    assert prepared.target_modules == LINEARS
    trainable = [n for n, p in prepared.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert not any("lm_head" in name for name in trainable)
    layer = prepared.model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_A["default"].weight.shape == (8, 32)


def test_lora_options_reach_peft(tiny_model_dir):
    config = _config(
        tiny_model_dir,
        method="lora",
        lora_r=4,
        lora_alpha=8,
        use_rslora=True,
        use_dora=True,
        target_modules=["q_proj", "v_proj"],
    )
    peft_config = prepare_model(config, CPU).model.peft_config["default"]
    assert (peft_config.r, peft_config.lora_alpha) == (4, 8)
    assert peft_config.use_rslora and peft_config.use_dora
    assert set(peft_config.target_modules) == {"q_proj", "v_proj"}


def test_unknown_target_module_is_named(tiny_model_dir):
    with pytest.raises(ConfigError, match="'target_modules' names \\['qkv'\\]"):
        prepare_model(_config(tiny_model_dir, method="lora", target_modules=["qkv"]), CPU)


def test_full_trains_every_weight(tiny_model_dir):
    model = prepare_model(_config(tiny_model_dir, method="full"), CPU).model
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())


def test_qlora_is_nf4_with_fp32_adapters_and_keeps_grads_after_eval(tiny64_dir, chat_data):
    import bitsandbytes as bnb

    prepared = prepare_model(_config(tiny64_dir, method="qlora"), CPU)
    model = prepared.model
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * len(LINEARS)
    state = quantized[0].weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # NF4 with double quantization
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n and p.dtype == torch.float32 for n, p in trainable.items())

    prepared_data = prepare_data(
        DataConfig(path=str(chat_data), max_length=128), prepared.tokenizer
    )
    batch = make_batches(
        prepared_data.train[:4], batch_size=4, max_length=128, packing=False, pad_token_id=0
    )[0]

    def first_layer_grad():
        model.zero_grad()
        supervised_loss_sum(model, batch).backward()
        name = next(n for n in trainable if "layers.0." in n and "lora_B" in n)
        return trainable[name].grad.clone()

    # Make B non-zero so gradients reach layer 0's A and B through the frozen 4-bit layers.
    with torch.no_grad():
        for name, param in trainable.items():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    before = first_layer_grad()
    evaluate_loss(model, [batch], CPU, torch.float32)  # bitsandbytes would repack here
    after = first_layer_grad()
    assert before.abs().sum() > 0
    assert torch.allclose(before, after, atol=1e-6)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_qlora_does_not_keep_the_checkpoint_mapped(tiny64_dir, tmp_path):
    import gc
    import shutil

    private = Path(shutil.copytree(tiny64_dir, tmp_path / "private"))
    prepared = prepare_model(_config(private, method="qlora"), CPU)
    gc.collect()
    # The full-precision checkpoint stays resident while any tensor views its mapping.
    assert str(private) not in Path("/proc/self/maps").read_text()
    assert prepared.model is not None


def test_cli_qlora_run_prints_no_benign_third_party_notices(tiny64_dir, chat_data, tmp_path):
    import subprocess
    import sys

    command = [
        sys.executable, "-m", "tuneforge", "train", "--model", str(tiny64_dir),
        "--data", str(chat_data), "--method", "qlora", "--max-steps", "1", "--batch-size", "4",
        "--max-length", "128", "--no-progress", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "gemm_4bit_forward" not in done.stderr
    assert "is_gradient_checkpointing" not in done.stderr
