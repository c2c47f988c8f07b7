"""Model families llama.cpp runs, and how each one's config and weights become GGUF.

One ``Family`` per transformers ``model_type``: the llama.cpp architecture, the hyperparameters
it reads, and the few weight transforms it expects. Tensor names come from the ``gguf``
package's own map (the one llama.cpp's converter uses). What llama.cpp would compute differently
(a rope scaling it does not implement, a layer pattern it hard-codes otherwise) is refused here
by name rather than written into a file that loads and answers wrongly.

Weight transforms:

- Llama/Mistral: llama.cpp rotates interleaved pairs, transformers the two halves of each head,
  so q/k rows are permuted per head (transformers' GGUF reader undoes the same permutation);
- Gemma 2/3: transformers' RMSNorm scales by ``1 + weight``, llama.cpp by ``weight``: +1;
- Llama 3.1+ ``rope_scaling`` ``llama3``: llama.cpp reads per-frequency factors from a
  ``rope_freqs`` tensor, computed here from the config (the formula of Meta's reference code).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from tuneforge.errors import ModelError


@dataclass(frozen=True)
class Family:
    """How one transformers ``model_type`` maps onto a llama.cpp architecture.

    Attributes:
        model_type: transformers' ``config.model_type``.
        arch: llama.cpp's architecture name (``general.architecture``).
        permute_rotary: permute q/k rows to llama.cpp's interleaved rotary layout.
        norm_offset: added to every ``*norm.weight`` (Gemma stores ``weight - 1``).
        add_hparams: writes the family's own keys (beyond the common ones); raises ModelError
            for settings llama.cpp would not honour.
    """

    model_type: str
    arch: str
    permute_rotary: bool
    norm_offset: float
    add_hparams: Callable[[object, object], None]


def _rope(config) -> dict:
    """The full-attention rope parameters (transformers 5 ``rope_parameters``)."""
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if "full_attention" in rope:
        rope = dict(rope["full_attention"])
    return rope


def _add_rope_scaling(writer, config) -> None:
    import gguf

    rope = _rope(config)
    kind = rope.get("rope_type", "default")
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind not in ("default", "llama3"):  # llama3: the rope_freqs tensor
        raise ModelError(
            f"GGUF export: rope_type {kind!r} of this {config.model_type} model is not "
            "supported (supported: default, linear, llama3)"
        )


def _no_hparams(writer, config) -> None:
    del writer, config


def _add_qwen2(writer, config) -> None:
    if getattr(config, "use_sliding_window", False):
        raise ModelError("GGUF export: Qwen2 with use_sliding_window=true is not supported")


def _check_gemma_scale(config, layers_27b: int) -> None:
    """llama.cpp scales queries by 1/sqrt(head_dim), or hidden/heads for the 27B sizes."""
    expected = (
        config.hidden_size // config.num_attention_heads
        if config.num_hidden_layers == layers_27b
        else config.head_dim
    )
    if config.query_pre_attn_scalar != expected:
        raise ModelError(
            f"GGUF export: query_pre_attn_scalar {config.query_pre_attn_scalar} differs from "
            f"what llama.cpp uses for a {config.num_hidden_layers}-layer {config.model_type} "
            f"({expected}); the file would answer differently"
        )


def _check_layer_pattern(config, period: int) -> None:
    """llama.cpp hard-codes Gemma's sliding/full layers: every ``period``-th layer is full."""
    expected = [
        "full_attention" if (i + 1) % period == 0 else "sliding_attention"
        for i in range(config.num_hidden_layers)
    ]
    layer_types = list(getattr(config, "layer_types", None) or expected)
    if layer_types != expected:
        raise ModelError(
            f"GGUF export: {config.model_type} layer_types {layer_types} differ from llama.cpp's "
            f"fixed pattern (every {period}th layer full attention)"
        )


def _add_gemma_common(writer, config) -> None:
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_sliding_window(int(config.sliding_window))
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


def _add_gemma2(writer, config) -> None:
    _check_gemma_scale(config, layers_27b=46)
    _check_layer_pattern(config, period=2)
    _add_gemma_common(writer, config)
    writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping or 0.0))


def _add_gemma3(writer, config) -> None:
    _check_gemma_scale(config, layers_27b=62)
    _check_layer_pattern(config, period=6)
    if getattr(config, "attn_logit_softcapping", None):
        raise ModelError("GGUF export: Gemma 3 with attn_logit_softcapping is not supported")
    local = (getattr(config, "rope_parameters", None) or {}).get("sliding_attention", {})
    if local.get("rope_theta", 10000.0) != 10000.0:
        raise ModelError(
            f"GGUF export: llama.cpp fixes Gemma 3's local rope_theta at 10000, this model has "
            f"{local['rope_theta']}"
        )
    if local.get("rope_type", "default") != "default":
        raise ModelError("GGUF export: Gemma 3 local-layer rope scaling is not supported")
    _add_gemma_common(writer, config)


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("llama", "llama", True, 0.0, _no_hparams),
        # Mistral runs as plain Llama; a sliding_window (Mistral 7B v0.1) is not applied by
        # llama.cpp, as its own converter writes it: prompts longer than the window differ.
        Family("mistral", "llama", True, 0.0, _no_hparams),
        Family("qwen2", "qwen2", False, 0.0, _add_qwen2),
        Family("qwen3", "qwen3", False, 0.0, _no_hparams),
        Family("gemma2", "gemma2", False, 1.0, _add_gemma2),
        Family("gemma3_text", "gemma3", False, 1.0, _add_gemma3),
    )
}


def family_for(config) -> Family:
    """The family of a transformers config, or a ModelError naming the unsupported type."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise ModelError(
            f"GGUF export does not support model_type {config.model_type!r}; supported: "
            f"{', '.join(sorted(FAMILIES))}. Merge the adapter (tuneforge merge) and use "
            "llama.cpp's convert_hf_to_gguf.py on the merged folder"
        )
    if getattr(config, "mlp_bias", False):
        raise ModelError(f"GGUF export: {config.model_type} with mlp_bias=true is not supported")
    return family


def head_dim(config) -> int:
    """Per-head width: ``config.head_dim`` when set, else ``hidden_size / heads``."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def add_hyperparameters(writer, family: Family, config) -> None:
    """Write the architecture's hyperparameters (``<arch>.*`` keys) for ``config``."""
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", config.num_attention_heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(float(_rope(config).get("rope_theta", 10000.0)))
    writer.add_vocab_size(config.vocab_size)
    width = head_dim(config)
    writer.add_rope_dimension_count(width)
    if width != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(width)
        writer.add_value_length(width)
    _add_rope_scaling(writer, config)
    family.add_hparams(writer, config)


def permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k rows (or bias entries) from the half-split rotary layout to interleaved.

    ``weight`` is ``[heads * head_dim, ...]``; within each head, row ``j`` of the first half
    and row ``j`` of the second half become rows ``2j`` and ``2j + 1``.
    """
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def llama3_rope_factors(config) -> np.ndarray | None:
    """Per-frequency divisors for ``rope_type: llama3`` (Llama 3.1+), else None.

    Wavelengths shorter than ``original_max_position_embeddings / high_freq_factor`` keep their
    frequency (factor 1), longer than ``.../low_freq_factor`` are slowed by ``factor``, and those
    between are interpolated smoothly. Shape ``[head_dim / 2]``, float32.
    """
    rope = _rope(config)
    if rope.get("rope_type") != "llama3":
        return None
    dim = head_dim(config)
    base = float(rope.get("rope_theta", 10000.0))
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for index in range(0, dim, 2):
        wavelength = 2 * math.pi * base ** (index / dim)
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def gguf_tensors(family: Family, config, state_dict) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(llama.cpp name, float32 array)`` for every weight llama.cpp reads.

    Raises:
        ModelError: a parameter has no llama.cpp counterpart (an unsupported variant).
    """
    import gguf
    import torch

    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == family.arch)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", heads)
    for name, tensor in state_dict.items():
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ModelError(
                f"GGUF export: parameter {name!r} of this {config.model_type} model has no "
                f"counterpart in llama.cpp's {family.arch} architecture"
            )
        array = tensor.detach().to(torch.float32).cpu().numpy()
        if family.permute_rotary and ".q_proj." in name:
            array = permute_rotary(array, heads)
        elif family.permute_rotary and ".k_proj." in name:
            array = permute_rotary(array, kv_heads)
        if family.norm_offset and name.endswith("norm.weight"):
            array = array + np.float32(family.norm_offset)
        yield target, np.ascontiguousarray(array)
    factors = llama3_rope_factors(config)
    if factors is not None:
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors
