"""Fixtures for the generation tests."""

from __future__ import annotations

import pytest
import torch

from tiny import build_llama, build_tokenizer


@pytest.fixture(scope="module")
def lm():
    """A tiny Llama whose greedy continuations vary (weights std 0.2: at the default init a
    width-32 model repeats one token, which would let mixed-up rows pass by accident)."""
    tokenizer = build_tokenizer()
    model = build_llama(tokenizer, seed=3)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model, tokenizer
