"""The ``tuneforge train`` command line the run tests share: a tiny model, batch 4, length 128,
lr 1e-3, fp32, no progress bar, one thread; a test adds its own flags.

fp32 because these tests compare runs with each other (resumed vs uninterrupted, a reference
copy vs precomputed log-probs), which only fp32 keeps exact; ``dtype: auto`` (bf16 on a CPU
with AVX512-BF16) has its own test in test_run.py."""

from __future__ import annotations


def train_argv(model_dir, data, out, *extra) -> list[str]:
    """``tuneforge train`` arguments for ``main``: the shared flags, then ``extra``."""
    return [
        "train", "--model", str(model_dir), "--data", str(data), "--out", str(out),
        "--batch-size", "4", "--max-length", "128", "--lr", "1e-3", "--dtype", "float32",
        "--no-progress", "--num-threads", "1", *extra,
    ]  # fmt: skip
