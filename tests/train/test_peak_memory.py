"""The training's peak memory excludes what loading the model briefly took."""

from __future__ import annotations

import sys

import pytest
import torch

from tuneforge.train.metrics import peak_memory_bytes, reset_peak_memory

CPU = torch.device("cpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS reset is Linux-only")
def test_reset_starts_a_new_peak():
    spike = torch.ones(64 * 2**20)  # 256 MiB, touched
    spike.add_(1)
    before = peak_memory_bytes(CPU)
    del spike
    reset_peak_memory(CPU)
    after = peak_memory_bytes(CPU)
    assert before - after > 200 * 2**20
