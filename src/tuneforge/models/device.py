"""Choosing the device and the compute dtype.

``auto`` means: CUDA when a GPU is visible, else CPU; bf16 on a CUDA device that supports it,
fp32 otherwise (bf16 matmuls on most CPUs are emulated and slower than fp32 for small models).
"""

from __future__ import annotations

from typing import Literal

import torch

from tuneforge.errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda[:N]`` into a torch device; raise if CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: no CUDA device is visible; use --device cpu or --device auto"
            )
        return torch.device(name)
    raise ConfigError(f"--device {name!r} is not one of auto, cpu, cuda")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Turn ``auto|float32|bfloat16|float16`` into a torch dtype for ``device``."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"--dtype {name!r} is not one of auto, float32, bfloat16, float16")
    return _DTYPES[name]
