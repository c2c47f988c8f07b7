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

Supported: vanilla LoRA on linear layers (peft's ``lora.Linear`` and its bitsandbytes variants).
``LoraBank.blocker`` names anything else (DoRA and other variants, LoRA biases, merged adapters,
``modules_to_save``, other tuners), and the caller decodes with peft instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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
    """Where each adapter's rank block sits in one layer's ``R`` columns."""

    blocks: tuple[tuple[str, int, int, float], ...]  # (adapter, start, stop, scaling)
    width: int  # R

    def mask(self, row_adapters: list[tuple[str, ...]], device, dtype) -> torch.Tensor | None:
        """``M`` for these rows (``[rows, R]``), or None when no row uses an adapter here."""
        mask = torch.zeros((len(row_adapters), self.width), device=device, dtype=dtype)
        used = False
        for row, adapters in enumerate(row_adapters):
            for adapter, start, stop, scaling in self.blocks:
                if adapter in adapters:
                    mask[row, start:stop] = scaling
                    used = True
        return mask if used else None


class LoraBank:
    """The adapters ``adapters`` of every LoRA layer of ``model``, stacked for batched LoRA.

    Args:
        model: a peft model (or its base model) holding LoRA layers.
        adapters: the peft adapter names rows of the batch use.
    """

    def __init__(self, model, adapters: tuple[str, ...]) -> None:
        self.adapters = adapters
        # layer -> (A_cat [R, in], B_cat [out, R], layout), or None where no row's adapter
        # adapts that layer (it then runs its base layer alone, whatever peft's active adapter)
        self.layers: dict[nn.Module, tuple[torch.Tensor, torch.Tensor, _Layout] | None] = {}
        for _, layer in lora_layers(peft_base_model(model)):
            present = [name for name in adapters if name in layer.lora_A]
            if not present:
                self.layers[layer] = None
                continue
            blocks, start = [], 0
            for name in present:
                rank = layer.lora_A[name].weight.shape[0]
                blocks.append((name, start, start + rank, float(layer.scaling[name])))
                start += rank
            a_cat = torch.cat([layer.lora_A[name].weight.detach() for name in present])
            b_cat = torch.cat([layer.lora_B[name].weight.detach() for name in present], dim=1)
            self.layers[layer] = (a_cat, b_cat, _Layout(tuple(blocks), start))
        self._groups: dict[tuple[nn.Module, ...], tuple | None] = {}
        self._masks: dict[tuple, torch.Tensor | None] = {}
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

    def delta(self, group: tuple[nn.Module, ...], x: torch.Tensor) -> torch.Tensor | None:
        """The LoRA term of the layers ``group`` (which all read ``x``, ``[rows, q, in]``) for
        the rows set by ``set_rows``: ``[rows, q, sum of their out_features]``, the layers'
        terms side by side in ``x``'s dtype; None when no row's adapter adapts them."""
        terms = self._terms(group, x)
        if terms is None:
            return None
        mixed, b_cat = terms
        return (mixed @ b_cat.t()).view(*x.shape[:-1], b_cat.shape[0])

    def add_delta(self, group: tuple[nn.Module, ...], x: torch.Tensor, out: torch.Tensor) -> None:
        """``out += delta(group, x)`` in place (``out``: the group's contiguous base output), the
        second product and the sum in one kernel."""
        terms = self._terms(group, x)
        if terms is not None:
            mixed, b_cat = terms
            out.view(-1, out.shape[-1]).addmm_(mixed, b_cat.t())

    def _terms(self, group: tuple[nn.Module, ...], x: torch.Tensor):
        """``(((x · A_catᵀ) ⊙ M) as [rows * q, R], B_cat)`` in ``x``'s dtype, or None."""
        if group not in self._groups:
            self._groups[group] = self._stack(group)
        stacked = self._groups[group]
        if stacked is None:
            return None
        a_cat, b_cat, layout = stacked
        if a_cat.dtype != x.dtype:
            # peft keeps LoRA weights in fp32; computing the term in the activations' dtype
            # (bf16 on a bf16 base) saves two conversions and runs the products in bf16.
            a_cat, b_cat = a_cat.to(x.dtype), b_cat.to(x.dtype)
            self._groups[group] = (a_cat, b_cat, layout)
        if layout.blocks not in self._masks:
            self._masks[layout.blocks] = layout.mask(self._rows, x.device, x.dtype)
        mask = self._masks[layout.blocks]
        if mask is None:
            return None
        # x: [rows, q, in] -> [rows, q, R] -> keep each row's own blocks
        mixed = torch.matmul(x, a_cat.t()) * mask[:, None, :]
        return mixed.view(-1, mixed.shape[-1]), b_cat

    def _stack(self, group: tuple[nn.Module, ...]):
        """``(A [R, in], B [sum of out_features, R] block-diagonal, layout)`` of a group."""
        outs = [layer.out_features for layer in group]
        a_parts, b_parts, blocks, width, offset = [], [], [], 0, 0
        for layer, out in zip(group, outs, strict=True):
            stacked = self.layers.get(layer)
            if stacked is not None:
                a_cat, b_cat, layout = stacked
                b_full = b_cat.new_zeros((sum(outs), layout.width))
                b_full[offset : offset + out] = b_cat
                a_parts.append(a_cat)
                b_parts.append(b_full)
                blocks += [(name, width + a, width + b, k) for name, a, b, k in layout.blocks]
                width += layout.width
            offset += out
        if not a_parts:
            return None
        return torch.cat(a_parts), torch.cat(b_parts, dim=1), _Layout(tuple(blocks), width)
