"""LoRA for a batch whose rows use different adapters, in one product per layer.

peft's mixed-adapter forward (``adapter_names``) runs one pass per adapter present in the batch
(select its rows, ``B·A·x``, scatter back): with 4 adapters that is four times the small kernels
of one adapter, and decoding is made of small kernels. Here, as in Punica and S-LoRA, each LoRA
layer's adapters sit side by side (``A_cat`` stacks their ``A`` rows, ``B_cat`` their ``B``
columns) and every row of the batch is served at once::

    delta = ((x · A_catᵀ) ⊙ M) · B_catᵀ          x: [rows, q, in]  A_cat: [R, in]  B_cat: [out, R]

where ``R`` is the sum of the adapters' ranks and ``M[b]`` (``[rows, R]``) holds adapter ``j``'s
``scaling`` over ``j``'s block of ``R`` when row ``b`` uses ``j``, and zeros elsewhere. Only the
adapters that rows of the batch use are stacked. Layers that read the same input (q/k/v,
gate/up) are served together: their ``A`` rows stacked, their ``B`` block-diagonal, so the
term of the whole group is the same two products, added to the group's fused output.

What a step does not redo (bench/decode.py's profile, docs/decode.md): a group's stacked
weights (converted to the activations' dtype and, for bf16 on CPU, packed for oneDNN as
``packed_linear`` does, for the decode steps' products) are kept process-wide per set of
adapters (``STACKED_LORA``), so a new batch, or rows joining with another mix of adapters,
reuses them while the adapters' weights are unchanged (the bank was rebuilt, about 75 ms of
concatenations and zero-fills at one thread for the 135M model, for every batch and every
change of the set of adapters in a running batch); ``M`` is made once per batch composition
(``set_rows``) and layout, not per step and layer.

Supported: vanilla LoRA on linear layers (peft's ``lora.Linear`` and its bitsandbytes variants).
``LoraBank.blocker`` names anything else (DoRA and other variants, LoRA biases, merged adapters,
``modules_to_save``, other tuners), and the caller decodes with peft instead.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from tuneforge.generation.packed_linear import pack_weight, packed_linear, packing_supported

_LINEAR_CLASSES = {"Linear", "Linear8bitLt", "Linear4bit"}  # peft.tuners.lora(.bnb) layers


def peft_base_model(model) -> nn.Module:
    """The transformers model inside a peft model (the model itself when it is not one)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def lora_layers(model) -> list[tuple[str, nn.Module]]:
    """``(qualified name, layer)`` of every peft LoRA layer in ``model``."""
    from peft.tuners.lora import LoraLayer

    return [
        (name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)
    ]


@dataclass
class _Layout:
    """Where each adapter's rank block sits in one group's ``R`` columns."""

    blocks: tuple[tuple[str, int, int, float], ...]  # (adapter, start, stop, scaling)
    width: int  # R

    def mask(self, row_adapters: list[tuple[str, ...]], device, dtype) -> torch.Tensor | None:
        """``M`` for these rows (``[rows, 1, R]``), or None when no row uses an adapter here."""
        mask = torch.zeros((len(row_adapters), 1, self.width), device=device, dtype=dtype)
        used = False
        for row, adapters in enumerate(row_adapters):
            for adapter, start, stop, scaling in self.blocks:
                if adapter in adapters:
                    mask[row, 0, start:stop] = scaling
                    used = True
        return mask if used else None


@dataclass(frozen=True)
class _Stacked:
    """A layer group's adapters side by side, in the activations' dtype."""

    a: torch.Tensor  # A_cat [R, in]
    b: torch.Tensor  # B_cat [sum of out_features, R], block-diagonal over the group's layers
    a_packed: torch.Tensor | None  # the same, packed for oneDNN (bf16 on CPU), else None
    b_packed: torch.Tensor | None
    layout: _Layout


class StackedLora:
    """Stacked adapter weights per layer group, made on first use and reused while the
    adapters' weights and scalings are unchanged (held weakly per group, as ``PackedLinears``).

    A group keeps its last ``sets_per_group`` sets of adapters (a server cycles through a few
    mixes as rows join and leave).
    """

    def __init__(self, sets_per_group: int = 16) -> None:
        self.sets_per_group = sets_per_group
        # first layer of a group -> {(group, adapters, dtype): (sources, stacked)}
        self._held: weakref.WeakKeyDictionary[nn.Module, OrderedDict] = weakref.WeakKeyDictionary()

    def stacked(
        self, group: tuple[nn.Module, ...], adapters: tuple[str, ...], dtype: torch.dtype
    ) -> _Stacked | None:
        """The stacked adapters ``adapters`` of the LoRA layers ``group`` (which read the same
        input) in ``dtype``; None when none of them adapts a layer of the group."""
        sources = _sources(group, adapters)
        held = self._held.setdefault(group[0], OrderedDict())
        key = (tuple(id(layer) for layer in group), adapters, dtype)
        found = held.get(key)
        if found is not None and _same_sources(found[0], sources):
            held.move_to_end(key)
            return found[1]
        stacked = _stack(group, adapters, dtype)
        held[key] = (sources, stacked)
        held.move_to_end(key)
        while len(held) > self.sets_per_group:
            held.popitem(last=False)
        return stacked


def _sources(group: tuple[nn.Module, ...], adapters: tuple[str, ...]) -> tuple:
    """What a group's stacked weights are made of: each adapter's weights (the tensors and
    their in-place versions) and scaling, per layer."""
    parts = []
    for layer in group:
        for name in adapters:
            if isinstance(getattr(layer, "lora_A", None), nn.ModuleDict) and name in layer.lora_A:
                a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
                parts.append((a, a._version, b, b._version, float(layer.scaling[name])))
    return tuple(parts)


def _same_sources(held: tuple, now: tuple) -> bool:
    """Whether ``now`` is the same tensors, unchanged in place, with the same scalings."""
    return len(held) == len(now) and all(
        h[0] is n[0] and h[2] is n[2] and (h[1], h[3], h[4]) == (n[1], n[3], n[4])
        for h, n in zip(held, now, strict=True)
    )


def _stack(group: tuple[nn.Module, ...], adapters: tuple[str, ...], dtype) -> _Stacked | None:
    """``A_cat``, the block-diagonal ``B_cat`` and the layout of a group's adapters."""
    outs = [layer.out_features for layer in group]
    a_parts, b_parts, blocks, width, offset = [], [], [], 0, 0
    for layer, out in zip(group, outs, strict=True):
        lora_a = getattr(layer, "lora_A", None)
        present = [name for name in adapters if lora_a is not None and name in lora_a]
        for name in present:
            a = layer.lora_A[name].weight.detach()
            b = layer.lora_B[name].weight.detach()
            b_full = b.new_zeros((sum(outs), a.shape[0]))
            b_full[offset : offset + out] = b
            a_parts.append(a)
            b_parts.append(b_full)
            blocks.append((name, width, width + a.shape[0], float(layer.scaling[name])))
            width += a.shape[0]
        offset += out
    if not a_parts:
        return None
    # peft keeps LoRA weights in fp32; computing the term in the activations' dtype (bf16 on
    # a bf16 base) saves two conversions per layer and runs the products in bf16.
    a_cat = torch.cat(a_parts).to(dtype)
    b_cat = torch.cat(b_parts, dim=1).to(dtype)
    a_packed = b_packed = None
    if packing_supported(a_cat):
        a_packed, b_packed = pack_weight(a_cat), pack_weight(b_cat)
    return _Stacked(a_cat, b_cat, a_packed, b_packed, _Layout(tuple(blocks), width))


STACKED_LORA = StackedLora()
"""The process's stacked adapter weights (small: the adapters' own size per set of adapters)."""


class LoraBank:
    """The adapters ``adapters`` of every LoRA layer of ``model``, stacked for batched LoRA.

    Args:
        model: a peft model (or its base model) holding LoRA layers.
        adapters: the peft adapter names rows of the batch use.
    """

    def __init__(self, model, adapters: tuple[str, ...]) -> None:
        self.adapters = adapters
        # group -> its stacked adapters (None: no row's adapter adapts it), from STACKED_LORA
        self._groups: dict[tuple[nn.Module, ...], _Stacked | None] = {}
        # M per layout (layers of one kind share theirs) and per group, for the rows set
        self._masks: dict[tuple, torch.Tensor | None] = {}
        self._group_masks: dict[tuple[nn.Module, ...], torch.Tensor | None] = {}
        self._rows: list[tuple[str, ...]] = []

    @staticmethod
    def blocker(model, adapters: tuple[str, ...]) -> str | None:
        """Why batched LoRA cannot decode rows on ``adapters`` with ``model`` (a reason a user
        can act on), or None. Adapters no row uses may be of any kind: their layers are not
        run."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        for name, module in peft_base_model(model).named_modules():
            if isinstance(module, AuxiliaryTrainingWrapper):
                return f"{name} is trained in full by an adapter (modules_to_save)"
            if not isinstance(module, BaseTunerLayer):
                continue
            kind = type(module)
            if not kind.__module__.startswith("peft.tuners.lora") or kind.__name__ not in (
                _LINEAR_CLASSES
            ):
                return f"{name} is a {kind.__module__}.{kind.__name__} layer"
            if module.merged:
                return f"{name} has an adapter merged into its weights"
            for adapter in adapters:
                if adapter not in module.lora_A:
                    continue
                if adapter in getattr(module, "lora_variant", {}):
                    return f"{name}: adapter {adapter!r} is a LoRA variant (DoRA or another)"
                if module.lora_B[adapter].bias is not None:
                    return f"{name}: adapter {adapter!r} has a LoRA bias"
        return None

    def set_rows(self, row_adapters: list[tuple[str, ...]]) -> None:
        """Set the adapters of each row of the next forwards (a tuple per row, empty: base)."""
        if row_adapters != self._rows:
            self._rows = list(row_adapters)
            self._masks.clear()
            self._group_masks.clear()

    def delta(self, group: tuple[nn.Module, ...], x: torch.Tensor) -> torch.Tensor | None:
        """The LoRA term of the layers ``group`` (which all read ``x``, ``[rows, ..., in]``) for
        the rows set by ``set_rows``: ``[rows, ..., sum of their out_features]``, the layers'
        terms side by side in ``x``'s dtype; None when no row's adapter adapts them."""
        if self._group_mask(group, x) is None:
            return None
        out = x.new_zeros(*x.shape[:-1], self._groups[group].b.shape[0])
        self.add_delta(group, x, out)
        return out

    def add_delta(self, group: tuple[nn.Module, ...], x: torch.Tensor, out: torch.Tensor) -> None:
        """``out += delta(group, x)`` in place (``out``: the group's contiguous base output)."""
        mask = self._group_masks.get(group, False)
        if mask is False:
            mask = self._group_mask(group, x)
        if mask is None:
            return
        stacked = self._groups[group]
        if stacked.a_packed is not None and x.dim() == 3 and x.shape[1] == 1:
            # A decode step (one token per row): packed products, four kernels, no reshaping
            # (each kernel costs a few µs, 120 groups per step). Prefills run plain products:
            # faster there (400 tokens, 4 adapters, r=8: 1564 vs 2118 µs per layer), and a
            # packed product's result for a row can depend on how many rows it is computed
            # with at prefill sizes (bf16, K=12 N=64: 90 rows vs one at a time), which would
            # let a row's greedy answer change with its batch (tests/serve/
            # test_engine_continuous.py)
            product = packed_linear(x, stacked.a_packed)
            out.add_(packed_linear(product * mask, stacked.b_packed))
            return
        rows_x = x.view(mask.shape[0], -1, x.shape[-1])  # [rows, tokens per row, in]
        mixed = torch.matmul(rows_x, stacked.a.t()) * mask
        # the second product and the sum in one kernel
        out.view(-1, out.shape[-1]).addmm_(mixed.view(-1, mixed.shape[-1]), stacked.b.t())

    def _group_mask(self, group: tuple[nn.Module, ...], x: torch.Tensor) -> torch.Tensor | None:
        """``M`` of a group for the rows set (``[rows, 1, R]``), None when no row uses it;
        looks the group's stacked adapters up on first use, makes ``M`` once per layout."""
        if group not in self._groups:
            self._groups[group] = STACKED_LORA.stacked(group, self.adapters, x.dtype)
        stacked = self._groups[group]
        mask = None
        if stacked is not None:
            key = stacked.layout.blocks
            if key not in self._masks:
                self._masks[key] = stacked.layout.mask(self._rows, x.device, x.dtype)
            mask = self._masks[key]
        self._group_masks[group] = mask
        return mask
