"""bf16 linear layers with their weights packed once for oneDNN, for decoding on CPUs.

A bf16 ``F.linear`` on CPU converts its weight into oneDNN's blocked layout on every call; for
decoding, where each weight is used for one token of each row and then waits for the next
step, that conversion costs as much as the product itself. Packing each weight once
(``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile``'s freezing pass does) and
calling the packed product halved the time of the decoding matmuls in bench/decode.py's profile
(docs/decode.md). The packed copy is kept beside the layer while its weight is unchanged (same
storage, same in-place version), so training or merging into a weight invalidates it.

It costs memory: one more copy of every bf16 linear weight (about the model's size in bf16).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial

import torch
from torch import nn


def packing_supported(weight: torch.Tensor) -> bool:
    """Whether ``weight`` (a bf16 linear weight on CPU) can use a packed oneDNN product."""
    return (
        weight.dtype == torch.bfloat16
        and weight.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def _packed_product(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor):
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class PackedLinears:
    """Packed weights of ``nn.Linear`` layers, made on first use and reused while unchanged.

    One instance serves every model of a process; it holds the layers weakly, so a model that
    is dropped takes its packed weights with it.
    """

    def __init__(self) -> None:
        # layer -> (weight storage address, weight version, packed weight)
        self._packed: weakref.WeakKeyDictionary[nn.Linear, tuple[int, int, torch.Tensor]] = (
            weakref.WeakKeyDictionary()
        )

    def forward_for(self, layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """A forward computing ``layer(x)`` with the packed weight, or None when ``layer`` is
        not a plain bf16 ``nn.Linear`` on a CPU with native bf16 products."""
        if type(layer) is not nn.Linear or not packing_supported(layer.weight):
            return None
        weight = layer.weight
        key = (weight.data_ptr(), weight._version)
        held = self._packed.get(layer)
        if held is None or held[:2] != key:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
            held = (*key, packed)
            self._packed[layer] = held
        bias = None if layer.bias is None else layer.bias.detach()
        return partial(_packed_product, held[2], bias)


PACKED_LINEARS = PackedLinears()
"""The process's packed weights (one copy per bf16 linear layer that decoded on CPU)."""
