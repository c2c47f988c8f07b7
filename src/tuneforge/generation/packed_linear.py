"""Linear layers that read the same input, as one product with a weight packed for oneDNN.

A bf16 ``F.linear`` on CPU converts its weight into oneDNN's blocked layout on every call; for
decoding, where each weight serves one token per row and then waits for the next step, that
conversion costs as much as the product. Packing the weight once
(``torch.ops.mkldnn._reorder_linear_weight``, what ``torch.compile``'s freezing pass does) and
concatenating the layers that share an input (q/k/v, gate/up: fewer, larger products) cut the
decoding matmuls' time by about a third in bench/decode.py's profile (docs/decode.md). A packed
weight is kept while its layers' weights are unchanged (same storage, same in-place version),
so training or merging into a weight makes a new one.

Packing costs memory: one more copy of the packed layers' weights (about the model's size in
bf16). fp32 weights, GPUs and quantized layers are not packed: each layer runs as it is.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Product = Callable[[torch.Tensor], torch.Tensor]
"""``x -> cat([layer(x) for layer in layers], -1)`` for layers that read the same input."""


def packing_supported(weight: torch.Tensor) -> bool:
    """Whether ``weight`` (a bf16 linear weight on CPU) can use a packed oneDNN product."""
    return (
        weight.dtype == torch.bfloat16
        and weight.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (``[out, in]``, :func:`packing_supported`) in oneDNN's blocked layout, once."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)


def packed_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with the weight packed by :func:`pack_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class PackedLinears:
    """Packed weights, made on first use and reused while the layers' weights are unchanged.

    One instance serves every model of a process; it holds the layers weakly, so a model that
    is dropped takes its packed weights with it.
    """

    def __init__(self) -> None:
        # first layer of a group -> (identity of the group's weights, packed weight, bias)
        self._packed: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()

    def packed(
        self, layers: tuple[nn.Module, ...]
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """``(packed weight, bias or None)`` of ``layers`` side by side, made on first use; None
        unless every layer is a plain bf16 ``nn.Linear`` on a CPU with native bf16 products."""
        plain = all(type(layer) is nn.Linear for layer in layers)
        if not plain or not all(packing_supported(layer.weight) for layer in layers):
            return None
        identity = tuple((id(w), w.data_ptr(), w._version) for w in (ly.weight for ly in layers))
        held = self._packed.get(layers[0])
        if held is None or held[0] != identity:
            weight = torch.cat([layer.weight.detach() for layer in layers])
            bias = None
            if any(layer.bias is not None for layer in layers):
                bias = torch.cat(
                    [
                        layer.bias.detach()
                        if layer.bias is not None
                        else torch.zeros(layer.out_features, dtype=weight.dtype)
                        for layer in layers
                    ]
                )
            held = (identity, pack_weight(weight), bias)
            self._packed[layers[0]] = held
        return held[1], held[2]

    def product(self, layers: tuple[nn.Module, ...]) -> Product:
        """``x -> cat([layer(x) for layer in layers], -1)``: one packed bf16 product when every
        layer is a plain bf16 ``nn.Linear`` on a CPU with native bf16 products, else each layer
        as it is."""
        held = self.packed(layers)
        if held is None:
            if len(layers) == 1:
                return lambda x: _run(layers[0], x)
            return lambda x: torch.cat([_run(layer, x) for layer in layers], dim=-1)
        packed, bias = held

        def packed_product(x: torch.Tensor) -> torch.Tensor:
            return packed_linear(x, packed, bias)

        return packed_product


def _run(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if type(layer) is nn.Linear:  # skips nn.Module's call machinery, same product
        return F.linear(x, layer.weight, layer.bias)
    return layer(x)


PACKED_LINEARS = PackedLinears()
"""The process's packed weights (one copy per group of bf16 linear layers decoded on CPU)."""
