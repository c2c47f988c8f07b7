"""Loading a base in 4-bit NF4 (QLoRA; Dettmers et al. 2023), on CPU and CUDA.

One description of QLoRA's base, used wherever one is built: training with ``method: qlora``
and loading the base of a QLoRA adapter for inference (``tuneforge.adapters.
load_base_for_adapters``), so that an adapter runs on exactly the 4-bit weights it was trained
on. transformers quantizes every ``nn.Linear`` but the output head while loading, on CPU too
(bitsandbytes >= 0.48 has a CPU backend), so the full-precision weights never all sit in memory.

An adapter records the settings of its base (``BaseIdentity.quantization``: the
``BitsAndBytesConfig`` as JSON values); ``four_bit_config`` rebuilds the config from them.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch
from torch import nn

QLORA_SETTINGS = {
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_quant_storage": "uint8",
}
"""QLoRA's base: NF4 codes, double quantization of the block scales, packed into uint8."""


def is_four_bit(recorded: dict | None) -> bool:
    """True when a recorded quantization (``BaseIdentity.quantization``) is a 4-bit one."""
    return bool(recorded) and bool(recorded.get("load_in_4bit") or recorded.get("_load_in_4bit"))


def recorded_compute_dtype(recorded: dict | None) -> torch.dtype | None:
    """The compute dtype a recorded 4-bit base used (``bnb_4bit_compute_dtype``), if any."""
    name = str((recorded or {}).get("bnb_4bit_compute_dtype", "")).removeprefix("torch.")
    dtype = getattr(torch, name, None) if name else None
    return dtype if isinstance(dtype, torch.dtype) else None


def four_bit_config(compute_dtype: torch.dtype, recorded: dict | None = None):
    """The ``BitsAndBytesConfig`` of a 4-bit base.

    Args:
        compute_dtype: the dtype the 4-bit layers compute in (their weights are dequantized to
            it per matmul).
        recorded: the settings an adapter recorded for its base; None for QLoRA's
            (``QLORA_SETTINGS``).
    """
    from transformers import BitsAndBytesConfig

    settings = {
        **QLORA_SETTINGS,
        **{k: v for k, v in (recorded or {}).items() if k in QLORA_SETTINGS},
    }
    storage = str(settings["bnb_4bit_quant_storage"]).removeprefix("torch.")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=str(settings["bnb_4bit_quant_type"]),
        bnb_4bit_use_double_quant=bool(settings["bnb_4bit_use_double_quant"]),
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=getattr(torch, storage),
    )


def load_causal_lm(
    source: Path | str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    quantization=None,
    attention: str | None = None,
):
    """``AutoModelForCausalLM.from_pretrained`` in ``dtype`` on ``device``, 4-bit if asked.

    Args:
        source: a model folder or hub id.
        dtype: the dtype of the weights (with ``quantization``: of those left unquantized, the
            embeddings and norms).
        device: where the model goes.
        quantization: a ``BitsAndBytesConfig`` (``four_bit_config``) to quantize the linear
            layers while loading; None for full precision.
        attention: transformers' ``attn_implementation`` (None: its default).

    Raises:
        OSError: from transformers, when the files cannot be read (callers name the reference).
    """
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": dtype}
    if attention is not None:
        kwargs["attn_implementation"] = attention
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    if quantization is None:
        return model.to(device)
    keep_dequantize_path(model)
    release_checkpoint_mapping(model)
    return model


def keep_dequantize_path(model: nn.Module) -> None:
    """Keep every ``Linear4bit`` on bitsandbytes' dequantize-and-matmul path.

    bitsandbytes 0.50 repacks a ``Linear4bit`` for its AVX512-BF16 CPU kernel the first time it
    runs in eval mode without grad, and that kernel (1) has no backward: every later training
    step would silently lose the gradient flowing through the frozen 4-bit layers into earlier
    adapters (e.g. after a validation pass); (2) rounds the block scales to bf16: an adapter
    would no longer see the numbers it was trained on, nor those its merged model holds
    (``tuneforge merge`` dequantizes the same codes). One path for training and inference.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


@torch.no_grad()
def release_checkpoint_mapping(model: nn.Module) -> None:
    """Give the tensors that stayed unquantized (embeddings, norms) their own memory.

    Loaded from safetensors, they are views of the memory-mapped checkpoint file, which keeps
    the whole mapping alive: every page quantization read (all the full-precision weights) stays
    resident. Measured on the default model: 0.3 GiB of RSS that a 4-bit base is meant to save.
    """
    for module in model.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        for tensor in tensors:
            if tensor.dtype != torch.uint8:  # packed 4-bit weights are already our own
                tensor.data = tensor.data.clone()
    gc.collect()


def describe_four_bit(settings: dict) -> tuple[str, str]:
    """A 4-bit base in words: ``("NF4 4-bit", "double quantization, compute float32")``."""
    quant = str(settings.get("bnb_4bit_quant_type", "nf4")).upper()
    double = "double quantization, " if settings.get("bnb_4bit_use_double_quant") else ""
    compute = str(settings.get("bnb_4bit_compute_dtype", "")).removeprefix("torch.")
    return f"{quant} 4-bit", f"{double}compute {compute}"
