"""GGUF weight types written in pure Python (the ``gguf`` package's numpy quantizers).

The names are llama.cpp's (``--outtype`` of its converter, the types of ``llama-quantize``).
Which tensor gets which type follows llama.cpp's converter: 1-D tensors and norms stay f32; a
matrix whose rows are not a whole number of quantization blocks falls back to f16. For the 4- and
5-bit types, the token embedding and output matrices are written as Q8_0: ``llama-quantize`` keeps
them at higher precision too (Q6_K, a k-quant the ``gguf`` package cannot write), because errors
there reach every token's logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuneforge.errors import ModelError


@dataclass(frozen=True)
class GgufDtype:
    """One ``--dtype`` choice.

    Attributes:
        name: llama.cpp's name (``q8_0``).
        matrix_type: ``gguf.GGMLQuantizationType`` name for weight matrices (``Q8_0``).
        file_type: ``gguf.LlamaFileType`` name written to ``general.file_type``.
        bits: bits per weight of the matrices, blocks' scales included.
        summary: one line for ``--help``.
    """

    name: str
    matrix_type: str
    file_type: str
    bits: float
    summary: str


GGUF_DTYPES: dict[str, GgufDtype] = {
    d.name: d
    for d in (
        GgufDtype("f32", "F32", "ALL_F32", 32, "no rounding (4 bytes per weight)"),
        GgufDtype("f16", "F16", "MOSTLY_F16", 16, "half precision, llama.cpp's default"),
        GgufDtype("bf16", "BF16", "MOSTLY_BF16", 16, "bfloat16: f32's range, fewer digits"),
        GgufDtype("q8_0", "Q8_0", "MOSTLY_Q8_0", 8.5, "8-bit blocks of 32, near-lossless"),
        GgufDtype("q5_1", "Q5_1", "MOSTLY_Q5_1", 6, "5-bit blocks with scale and minimum"),
        GgufDtype("q5_0", "Q5_0", "MOSTLY_Q5_0", 5.5, "5-bit blocks with a scale"),
        GgufDtype("q4_1", "Q4_1", "MOSTLY_Q4_1", 5, "4-bit blocks with scale and minimum"),
        GgufDtype("q4_0", "Q4_0", "MOSTLY_Q4_0", 4.5, "4-bit blocks with a scale, smallest"),
    )
}

_HIGH_PRECISION_MATRICES = ("token_embd.weight", "output.weight")


def gguf_dtype(name: str) -> GgufDtype:
    """The ``GgufDtype`` called ``name``, or a ModelError listing the choices."""
    if name not in GGUF_DTYPES:
        raise ModelError(f"--dtype {name!r}: GGUF export writes one of {', '.join(GGUF_DTYPES)}")
    return GGUF_DTYPES[name]


def tensor_type(dtype: GgufDtype, name: str, array: np.ndarray):
    """The ``gguf.GGMLQuantizationType`` to store tensor ``name`` with under ``dtype``."""
    import gguf

    types = gguf.GGMLQuantizationType
    if array.ndim <= 1 or name.endswith("_norm.weight") or name.startswith("rope_freqs"):
        return types.F32
    wanted = types[dtype.matrix_type]
    if dtype.name.startswith(("q4", "q5")) and name in _HIGH_PRECISION_MATRICES:
        wanted = types.Q8_0
    block, _ = gguf.GGML_QUANT_SIZES[wanted]
    if array.shape[-1] % block:
        return types.F16
    return wanted


def encode(array: np.ndarray, qtype) -> np.ndarray:
    """``array`` (float32) stored as ``qtype``: f32/f16 arrays, or quantized bytes."""
    import gguf

    return gguf.quants.quantize(array, qtype)
