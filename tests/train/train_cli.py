"""The ``tuneforge train`` command line the run tests share: a tiny model, batch 4, length 128,
lr 1e-3, no progress bar, one thread; a test adds its own flags."""

from __future__ import annotations


def train_argv(model_dir, data, out, *extra) -> list[str]:
    """``tuneforge train`` arguments for ``main``: the shared flags, then ``extra``."""
    return [
        "train", "--model", str(model_dir), "--data", str(data), "--out", str(out),
        "--batch-size", "4", "--max-length", "128", "--lr", "1e-3", "--no-progress",
        "--num-threads", "1", *extra,
    ]  # fmt: skip
