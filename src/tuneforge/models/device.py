"""Choosing the device and the compute dtype.

``auto`` means: CUDA when a GPU is visible, else CPU; bf16 where the hardware computes it
natively, fp32 otherwise:

- a CUDA device that supports bf16 (``torch.cuda.is_bf16_supported()``: Ampere and later);
- a CPU with bf16 dot-product instructions (``torch.cpu._is_avx512_bf16_supported()``: AVX512-BF16,
  which every CPU with AMX also has, e.g. Intel Sapphire Rapids and later, AMD Zen 4 and later)
  and oneDNN's bf16 kernels in this torch build. On other CPUs bf16 is emulated and no faster
  than fp32, so ``auto`` keeps fp32 there.

bf16 halves the bytes read per generated token (decoding is bound by reading the weights), so
it decodes faster; its greedy answers can differ from fp32's after a few tokens
(bench/results/dtype_answers.md shows how on the bundled evaluation sets). ``--dtype float32``
(``dtype="float32"``) keeps fp32 anywhere.
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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 products natively (see the module docstring)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return (
            torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            and getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        )
    return False


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Turn ``auto|float32|bfloat16|float16`` into a torch dtype for ``device``
    (``auto``: bf16 where ``native_bf16(device)``, else fp32)."""
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"--dtype {name!r} is not one of auto, float32, bfloat16, float16")
    return _DTYPES[name]
