"""The loop: accumulation, schedule, precision, early stopping, NaN handling."""

from __future__ import annotations

import itertools

import pytest
import torch

from tiny import build_llama
from tuneforge.train.checkpoint import latest_checkpoint
from tuneforge.train.config import TrainConfig
from tuneforge.train.guards import TrainingDivergedError
from tuneforge.train.loop import TrainingData, fit
from tuneforge.train.metrics import read_metrics

CPU = torch.device("cpu")


def hand_batches(count: int, batch_size: int, length: int = 24, seed: int = 0, vocab: int = 300):
    """Equal-length batches without padding; the first half of each row carries no loss."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(10, vocab, (batch_size, length), generator=generator)
        labels = ids.clone()
        labels[:, : length // 2] = -100
        batches.append({"input_ids": ids, "labels": labels})
    return batches


def split(batches, size):
    """Re-cut batches into smaller ones holding the same rows in the same order."""
    rows = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    total = rows["input_ids"].shape[0]
    return [{k: v[i : i + size] for k, v in rows.items()} for i in range(0, total, size)]


def _config(tmp_path, **kwargs) -> TrainConfig:
    values = {"out": str(tmp_path), "progress": False, "lr": 1e-3}
    values.update(kwargs)
    return TrainConfig(**values)


def test_grad_accumulation_equals_one_big_batch(tiny_tokenizer, tmp_path):
    big = hand_batches(3, 4)
    small = split(big, 2)
    runs = []
    for batches, accum, name in ((big, 1, "big"), (small, 2, "small")):
        model = build_llama(tiny_tokenizer).train()
        config = _config(tmp_path / name, method="full", batch_size=4 // accum, grad_accum=accum)
        result = fit(
            model, TrainingData(lambda _e, b=batches: b), config, tmp_path / name, device=CPU
        )
        runs.append((result, model, read_metrics(tmp_path / name / "metrics.jsonl")))
    (r1, m1, log1), (r2, m2, log2) = runs
    assert r1.steps == r2.steps == 3
    for a, b in zip(log1, log2, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.allclose(p1, p2, atol=1e-5)


def test_warmup_then_cosine_and_metrics_fields(tiny_tokenizer, tmp_path):
    model = build_llama(tiny_tokenizer).train()
    config = _config(tmp_path, method="full", max_steps=8, warmup_ratio=0.25, lr=1e-3)
    fit(model, TrainingData(lambda _e: hand_batches(4, 2)), config, tmp_path, device=CPU)
    log = read_metrics(tmp_path / "metrics.jsonl")
    lrs = [row["lr"] for row in log]
    assert [row["step"] for row in log] == list(range(1, 9))
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    assert all(a > b for a, b in itertools.pairwise(lrs[2:]))  # cosine decay
    for key in ("loss", "tokens", "tokens_per_s", "grad_norm", "peak_memory_bytes"):
        assert all(row[key] > 0 for row in log), key
    assert log[0]["tokens"] == 2 * 24  # real tokens: no padding in these batches


def test_bf16_autocast_on_cpu_is_close_to_fp32(tiny_tokenizer, tmp_path):
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = build_llama(tiny_tokenizer).train()
        config = _config(tmp_path / str(dtype), method="full", max_steps=2)
        result = fit(
            model,
            TrainingData(lambda _e: hand_batches(2, 2)),
            config,
            tmp_path / str(dtype),
            device=CPU,
            compute_dtype=dtype,
        )
        losses[dtype] = result.final_loss
        assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert abs(losses[torch.float32] - losses[torch.bfloat16]) < 5e-2


def test_early_stopping_after_patience(tiny_tokenizer, tmp_path):
    model = build_llama(tiny_tokenizer).train()
    config = _config(
        tmp_path, method="full", lr=1e-12, max_steps=10, eval_every=1, early_stopping_patience=2
    )
    data = TrainingData(lambda _e: hand_batches(10, 2), val_batches=hand_batches(1, 2, seed=9))
    result = fit(model, data, config, tmp_path, device=CPU)
    assert (result.stop_reason, result.steps) == ("early_stopping", 3)
    val = [row for row in read_metrics(tmp_path / "metrics.jsonl") if "val_loss" in row]
    assert [row["step"] for row in val] == [1, 2, 3]


def test_nan_stops_with_message_and_keeps_last_good_checkpoint(tiny_tokenizer, tmp_path):
    model = build_llama(tiny_tokenizer).train()
    batches = hand_batches(6, 2)
    batches[3]["input_ids"][0, 0] = 7  # marker: the hook below turns this batch's loss NaN

    def poison(_module, inputs, output):
        return output * float("nan") if (inputs[0][:, 0] == 7).any() else output

    model.model.embed_tokens.register_forward_hook(poison)
    config = _config(tmp_path, method="full", save_every=2)
    with pytest.raises(TrainingDivergedError, match="step 4: loss nan") as caught:
        fit(model, TrainingData(lambda _e: batches), config, tmp_path, device=CPU)
    assert "last good checkpoint" in str(caught.value) and "step-2" in str(caught.value)
    assert latest_checkpoint(tmp_path).name == "step-2"
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no NaN update applied


def test_a_run_checkpoints_at_the_end_and_on_a_clock(tiny_tokenizer, tmp_path):
    """Default cadence (no step cadence, every 10 minutes): one checkpoint, at the end; with a
    tiny period every step is due."""
    from tuneforge.train.checkpoint import checkpoint_dirs

    data = TrainingData(lambda _e: hand_batches(4, 2))
    config = _config(tmp_path / "default", method="full", max_steps=3)
    assert (config.save_every, config.save_every_minutes) == (0, 10.0)
    fit(build_llama(tiny_tokenizer).train(), data, config, tmp_path / "default", device=CPU)
    assert [p.name for p in checkpoint_dirs(tmp_path / "default")] == ["step-3"]

    clock = _config(
        tmp_path / "clock", method="full", max_steps=3, save_every_minutes=1e-9, keep_checkpoints=5
    )
    fit(build_llama(tiny_tokenizer).train(), data, clock, tmp_path / "clock", device=CPU)
    assert [p.name for p in checkpoint_dirs(tmp_path / "clock")] == ["step-1", "step-2", "step-3"]


def test_collapse_to_the_uniform_distribution_stops_like_nan(tiny_tokenizer, tmp_path):
    """Zeroed final hidden states give every token the same logit: loss = ln(vocab) exactly and
    no gradient. The run stops after a few such steps; checkpoints of collapsed weights are not
    left behind, the good one before them is."""
    import math

    model = build_llama(tiny_tokenizer).train()
    collapsed = {"from_batch": 3}
    calls = {"n": 0}

    def flatten(_module, _inputs, output):
        calls["n"] += 1
        return output * 0 if calls["n"] > collapsed["from_batch"] else output

    model.model.norm.register_forward_hook(flatten)
    config = _config(tmp_path, method="full", max_steps=10, save_every=1, keep_checkpoints=10)
    with pytest.raises(TrainingDivergedError) as caught:
        fit(model, TrainingData(lambda _e: hand_batches(10, 2)), config, tmp_path, device=CPU)
    message = str(caught.value)
    vocab = len(tiny_tokenizer)
    assert f"ln({vocab}) = {math.log(vocab):.4f}" in message and "lr" in message
    assert "step 6" in message  # steps 4, 5, 6 collapsed
    # Step 4 ran on the weights of step 3, already flat: step-3 and later are not kept.
    assert latest_checkpoint(tmp_path).name == "step-2"
    assert "step-2" in message
