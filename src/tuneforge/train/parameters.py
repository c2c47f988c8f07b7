"""Counting parameters and bytes before training: the plan printed at the start of every run.

Counts are logical parameters: a 4-bit weight of shape [out, in] counts out*in parameters even
though bitsandbytes stores it packed two per byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class ParameterCounts:
    """Total and trainable parameters of a model, and the bytes they occupy.

    Attributes:
        total: every parameter (logical count).
        trainable: parameters with ``requires_grad``.
        weight_bytes: bytes the parameters occupy as stored (4-bit weights at their packed size,
            plus their quantization constants).
        trainable_bytes: bytes of the trainable parameters.
    """

    total: int
    trainable: int
    weight_bytes: int
    trainable_bytes: int

    @property
    def trainable_percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / self.total if self.total else 0.0


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Parameters of one LoRA pair on an ``in -> out`` linear: A is [r, in], B is [out, r]."""
    return r * (in_features + out_features)


def percent_fewer(trainable: int, reference: int) -> float:
    """How many percent fewer parameters ``trainable`` is than ``reference``."""
    return 100.0 * (1.0 - trainable / reference)


def _logical_numel(param) -> int:
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        numel = 1
        for dim in state.shape:
            numel *= int(dim)
        return numel
    return param.numel()


def _quant_state_bytes(param) -> int:
    state = getattr(param, "quant_state", None)
    if state is None:
        return 0
    total = state.absmax.numel() * state.absmax.element_size()
    nested = getattr(state, "state2", None)
    if nested is not None:
        total += nested.absmax.numel() * nested.absmax.element_size()
        total += nested.code.numel() * nested.code.element_size()
    return total


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Count a model's parameters (tied weights once) and the bytes they occupy."""
    total = trainable = weight_bytes = trainable_bytes = 0
    for param in model.parameters():  # parameters() yields a tied tensor once
        numel = _logical_numel(param)
        size = param.numel() * param.element_size() + _quant_state_bytes(param)
        total += numel
        weight_bytes += size
        if param.requires_grad:
            trainable += numel
            trainable_bytes += size
    return ParameterCounts(total, trainable, weight_bytes, trainable_bytes)


def optimizer_state_bytes(trainable: int, optimizer: str) -> int:
    """AdamW keeps two moments per trainable parameter: fp32 (8 B) or 8-bit (2 B + constants)."""
    return trainable * (8 if optimizer == "adamw" else 2)


def format_plan(
    counts: ParameterCounts,
    method: str,
    optimizer: str,
    activation_bytes: int | None = None,
    memory: bool = True,
) -> str:
    """The human-readable plan: parameter counts and (``memory``) a rough memory breakdown."""
    gib = 2**30
    lines = [
        f"method {method}: {counts.trainable:,} trainable of {counts.total:,} parameters "
        f"({counts.trainable_percent:.4f}%)",
    ]
    if counts.trainable < counts.total:
        lines.append(
            f"  {percent_fewer(counts.trainable, counts.total):.1f}% fewer trainable parameters "
            "than full fine-tuning"
        )
    if not memory:
        return "\n".join(lines)
    opt_bytes = optimizer_state_bytes(counts.trainable, optimizer)
    lines += [
        "estimated memory:",
        f"  weights          {counts.weight_bytes / gib:8.3f} GiB",
        f"  gradients        {counts.trainable_bytes / gib:8.3f} GiB",
        f"  optimizer states {opt_bytes / gib:8.3f} GiB ({optimizer})",
    ]
    if activation_bytes is not None:
        lines.append(f"  activations      {activation_bytes / gib:8.3f} GiB")
    return "\n".join(lines)
