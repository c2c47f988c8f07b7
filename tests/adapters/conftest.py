"""Fixtures for the adapters tests: tiny bases and adapters made with peft on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_assets import make_lora, save_lively_model


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """The tiny base every adapter here is made for (read-only)."""
    return save_lively_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="session")
def adapters(base_dir, tmp_path_factory) -> dict[str, Path]:
    """Read-only adapters on ``base_dir``: two tuneforge-saved, one plain-peft-saved."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": make_lora(base_dir, root / "a", seed=1, r=4),
        "b": make_lora(base_dir, root / "b", seed=2, r=8, targets=["q_proj", "v_proj"]),
        "peft": make_lora(base_dir, root / "peft", seed=3, r=2, plain_peft=True),
    }


@pytest.fixture(scope="session")
def other_base_dir(tmp_path_factory) -> Path:
    """A tiny model with the same shapes as ``base_dir`` but other weights."""
    return save_lively_model(tmp_path_factory.mktemp("other-base"), seed=7)


@pytest.fixture(scope="session")
def tiny64_dir(tmp_path_factory) -> Path:
    """A tiny model wide enough (64) for bitsandbytes' 4-bit CPU kernels (blocks of 64)."""
    return save_lively_model(tmp_path_factory.mktemp("tiny64"), hidden_size=64)
