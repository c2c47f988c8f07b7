"""Counting a loaded model's parameters and bytes: the first lines printed at the start of a run.

Counts are logical parameters: a 4-bit weight of shape [out, in] counts out*in parameters even
though bitsandbytes stores it packed two per byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tuneforge.plan.parameters import percent_fewer


@dataclass
class ParameterCounts:
    """Total and trainable parameters of a model, and the bytes they occupy.

    Attributes:
        total: every parameter (logical count).
        trainable: parameters with ``requires_grad``.
        weight_bytes: bytes the parameters occupy as stored (4-bit weights at their packed size,
            plus their quantization constants); ``summary.json`` reports it beside the plan's
            prediction.
    """

    total: int
    trainable: int
    weight_bytes: int

    @property
    def trainable_percent(self) -> float:
        """Trainable share of all parameters, in percent."""
        return 100.0 * self.trainable / self.total if self.total else 0.0


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
    total = trainable = weight_bytes = 0
    for param in model.parameters():  # parameters() yields a tied tensor once
        numel = _logical_numel(param)
        total += numel
        weight_bytes += param.numel() * param.element_size() + _quant_state_bytes(param)
        if param.requires_grad:
            trainable += numel
    return ParameterCounts(total, trainable, weight_bytes)


def parameter_summary(counts: ParameterCounts, method: str) -> str:
    """Measured trainable vs total parameters, and the saving over full fine-tuning."""
    lines = [
        f"method {method}: {counts.trainable:,} trainable of {counts.total:,} parameters "
        f"({counts.trainable_percent:.4f}%)",
    ]
    if counts.trainable < counts.total:
        lines.append(
            f"  {percent_fewer(counts.trainable, counts.total):.1f}% fewer trainable parameters "
            "than full fine-tuning"
        )
    return "\n".join(lines)
