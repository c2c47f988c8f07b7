"""``--compile``: per-block torch.compile trains the same model as eager (bf16 CPU path)."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from tuneforge.cli import main
from tuneforge.train.metrics import read_metrics


def _args(model_dir, data, out, *extra) -> list[str]:
    return [
        "train", "--model", str(model_dir), "--data", str(data), "--out", str(out),
        "--method", "lora", "--dtype", "bfloat16", "--batch-size", "4", "--max-length", "128",
        "--lr", "1e-2", "--max-steps", "3", "--no-progress", "--num-threads", "1", *extra,
    ]  # fmt: skip


def test_compiled_blocks_train_like_eager(tiny_model_dir, chat_data, tmp_path):
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert main(_args(tiny_model_dir, chat_data, eager)) == 0
    assert main(_args(tiny_model_dir, chat_data, compiled, "--compile")) == 0
    assert "compile: true" in (compiled / "config.yaml").read_text()
    losses = [
        [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
        for run in (eager, compiled)
    ]
    assert losses[1] == pytest.approx(losses[0], abs=1e-3)  # bf16 rounding, fused differently
    left = load_file(str(eager / "adapter" / "adapter_model.safetensors"))
    right = load_file(str(compiled / "adapter" / "adapter_model.safetensors"))
    assert set(left) == set(right)
    # Adam's first steps move every weight by about lr whatever the gradient's size, so a weight
    # whose tiny gradient rounds to the other sign differs by up to 2 x lr: compare on average.
    assert max(float((left[k] - right[k]).abs().mean()) for k in left) < 2e-3


def test_compiled_blocks_train_dpo_like_eager(tiny_model_dir, preference_data, tmp_path):
    """Pair rows (a 4D attention mask) and the reference forward with the adapter disabled go
    through the compiled blocks too."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    dpo = ("--objective", "dpo", "--lr", "1e-3")
    assert main(_args(tiny_model_dir, preference_data, eager, *dpo)) == 0
    assert main(_args(tiny_model_dir, preference_data, compiled, *dpo, "--compile")) == 0
    rows = [
        [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r] for run in (eager, compiled)
    ]
    for name in ("loss", "reward_margin", "chosen_logps"):
        got, want = [r[name] for r in rows[1]], [r[name] for r in rows[0]]
        assert got == pytest.approx(want, rel=1e-2, abs=2e-3), name
