"""The decoder forward of the Llama-style families, written for decoding: few kernels per layer.

transformers' forward spends, per generated token of the 135M default model, about as long in
Python and small kernels (module calls, norms, rotary embeddings, mask and cache bookkeeping:
some 450 kernels) as in the matmuls that read the weights (bench/decode.py's profile,
docs/decode.md). This forward computes the same function from the same modules' weights with
fewer, larger kernels: q/k/v and gate/up as one product each (``packed_linear``), each row's
LoRA term in one batched product per layer (``batched_lora``), keys and values written into
the row's own slot (``slot_cache``). It reuses the model's own rotary-embedding module (so every
RoPE scaling variant stays the model's) and its norms' weights and epsilons.

Covered: ``llama``, ``mistral``, ``qwen2`` (q/k/v biases), ``qwen3`` (per-head q/k norms):
tests/generation/test_fast_path.py checks each against ``model.generate`` on random weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuneforge.generation.batched_lora import LoraBank, peft_base_model
from tuneforge.generation.packed_linear import PACKED_LINEARS, Product
from tuneforge.generation.slot_cache import SlotCache

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def _base_layer(module: nn.Module) -> nn.Module:
    """The linear layer itself, inside a peft LoRA layer when it is one."""
    return getattr(module, "base_layer", module)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The families' RMSNorm, in their order of operations (fp32 statistics, then cast back).

    ``F.rms_norm`` without a weight runs the families' Python (``x`` in fp32, ``x * rsqrt(mean(
    x²) + eps)``, cast back to ``x``'s dtype) in one call, bit for bit; the weight multiplies
    after the cast, as theirs does (tests/generation/test_llama_forward.py)."""
    return weight * F.rms_norm(x, (x.shape[-1],), eps=eps)


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and the sign-folded ``sin`` (``[rows, q, 1, head_dim]``) that ``rotate`` takes,
    from the model's rotary module's ``[rows, q, head_dim]``; made once per forward."""
    half = cos.shape[-1] // 2
    signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    return cos[:, :, None], signed[:, :, None]


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` (``[rows, q, heads, head_dim]``) with ``rotary_tables``.

    The same products and sum as ``apply_rotary_pos_emb``'s ``x * cos + rotate_half(x) *
    sin``, bit for bit: ``rotate_half(x) = cat(-x₂, x₁)`` times ``cat(sin₁, sin₂)`` equals
    ``cat(x₂, x₁)`` (one ``roll``) times ``cat(-sin₁, sin₂)``, the sign moved into the table
    made once per forward instead of a negation and a concatenation per layer."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


def decoder_layer(x, norms, shape, cos, sin, project, store, attend, act=F.silu):
    """One decoder layer of the Llama-style families on ``x`` (``[rows, q, hidden]``): the body
    the eager forward (``LlamaForward.hidden``) and the compiled step (``compiled_step``) share.

    What differs between the two comes in as functions: ``project(group, h)`` is the product of
    group 0-3 (q/k/v fused, o, gate/up fused, down) with ``h``; ``store(k, v)`` writes this
    forward's keys and values (``[rows, kv_heads, q, head_dim]``) and returns what attention
    reads; ``attend(q, keys, values)`` is ``[rows, q, heads * head_dim]``.

    Args:
        norms: ``(input, post-attention, q or None, k or None)`` RMSNorm weights and
            ``(eps, per-head eps)``, as ``(weights, epsilons)``.
        shape: ``(heads, kv_heads, head_dim)``.
        cos, sin: ``rotary_tables`` of the forward.
        act: the MLP activation (SiLU for every family tested).
    """
    (in_w, post_w, q_w, k_w), (eps, head_eps) = norms
    heads, kv_heads, head_dim = shape
    rows, length = x.shape[:2]
    qk_width = (heads + kv_heads) * head_dim
    qkv = project(0, rms_norm(x, in_w, eps))
    if q_w is None:
        # q and k are adjacent in the fused output: one rotation for both
        qk = rotate(qkv[..., :qk_width].view(rows, length, heads + kv_heads, head_dim), cos, sin)
        q, k = qk[:, :, :heads], qk[:, :, heads:]
    else:  # qwen3: per-head RMSNorm of q and k before the rotation
        q, k = qkv[..., :qk_width].split((heads * head_dim, kv_heads * head_dim), -1)
        q = rotate(rms_norm(q.view(rows, length, heads, head_dim), q_w, head_eps), cos, sin)
        k = rotate(rms_norm(k.view(rows, length, kv_heads, head_dim), k_w, head_eps), cos, sin)
    v = qkv[..., qk_width:].view(rows, length, kv_heads, head_dim)
    keys, values = store(k.transpose(1, 2), v.transpose(1, 2))
    x = x + project(1, attend(q, keys, values))
    gate, up = project(2, rms_norm(x, post_w, eps)).chunk(2, dim=-1)
    return x + project(3, act(gate) * up)


@dataclass
class _Layer:
    """One decoder layer's modules, grouped by the input they read."""

    input_norm: nn.Module
    post_norm: nn.Module
    q_norm: nn.Module | None  # qwen3's per-head norms
    k_norm: nn.Module | None
    qkv: tuple[nn.Module, nn.Module, nn.Module]  # as in the model (maybe peft LoRA layers)
    out: tuple[nn.Module]  # groups of one: products and LoRA terms are looked up by group
    gate_up: tuple[nn.Module, nn.Module]
    down: tuple[nn.Module]
    act: nn.Module
    heads: int
    kv_heads: int
    head_dim: int
    scaling: float

    @property
    def groups(self) -> tuple[tuple[nn.Module, ...], ...]:
        """The product groups in ``decoder_layer``'s order: q/k/v, o, gate/up, down."""
        return (self.qkv, self.out, self.gate_up, self.down)

    @property
    def norms(self) -> tuple:
        """``decoder_layer``'s ``norms``: the RMSNorm weights and epsilons."""
        q, k = self.q_norm, self.k_norm
        weights = (
            self.input_norm.weight,
            self.post_norm.weight,
            None if q is None else q.weight,
            None if k is None else k.weight,
        )
        return weights, (self.input_norm.variance_epsilon, getattr(q, "variance_epsilon", None))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(heads, kv_heads, head_dim)``."""
        return self.heads, self.kv_heads, self.head_dim


class LlamaForward:
    """``hidden states`` of rows decoding in a ``SlotCache``, for one model of ``FAMILIES``.

    Args:
        model: a causal LM of ``FAMILIES`` (or a peft model wrapping one).
    """

    def __init__(self, model) -> None:
        base = peft_base_model(model)
        inner = base.get_decoder()
        config = base.config
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.norm = inner.norm
        self.head = (base.get_output_embeddings(),)  # a group of one, as ``_Layer.out``
        self.silu = config.hidden_act == "silu"
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.layers = []
        for layer in inner.layers:
            attention, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                _Layer(
                    input_norm=layer.input_layernorm,
                    post_norm=layer.post_attention_layernorm,
                    q_norm=getattr(attention, "q_norm", None),
                    k_norm=getattr(attention, "k_norm", None),
                    qkv=(attention.q_proj, attention.k_proj, attention.v_proj),
                    out=(attention.o_proj,),
                    gate_up=(mlp.gate_proj, mlp.up_proj),
                    down=(mlp.down_proj,),
                    act=mlp.act_fn,
                    heads=heads,
                    kv_heads=kv_heads,
                    head_dim=attention.head_dim,
                    scaling=attention.scaling,
                )
            )
        self._products: dict[tuple[nn.Module, ...], Product] = {}
        # a compiled single-row decode step (``compiled_step``), set by its owner when on
        self.compiled = None

    def _product(self, modules: tuple[nn.Module, ...]) -> Product:
        # keyed by the groups this forward holds (the same tuple objects every step), so a
        # step looks its products up without building keys
        product = self._products.get(modules)
        if product is None:
            product = PACKED_LINEARS.product(tuple(_base_layer(module) for module in modules))
            self._products[modules] = product
        return product

    def _project(self, modules, x: torch.Tensor, bank: LoraBank | None) -> torch.Tensor:
        """``cat([module(x) for module in modules], -1)``: the base product plus each row's
        LoRA term."""
        out = self._product(modules)(x)
        if bank is not None:
            bank.add_delta(modules, x, out)
        return out

    def hidden(
        self, input_ids: torch.Tensor, cache: SlotCache, bank: LoraBank | None
    ) -> torch.Tensor:
        """Last-layer hidden states ``[rows, q, hidden]`` (before the final norm) of
        ``input_ids`` (``[rows, q]``) at ``cache.positions`` (set by ``cache.place``); writes
        their keys and values."""
        # one token of one row in slot 0 (a decode step, or a one-token prompt joining alone)
        single = input_ids.shape == (1, 1) and cache.in_slot_order
        if self.compiled is not None and bank is None and single:
            hidden = self.compiled(input_ids, cache)
            if hidden is not None:
                return hidden
        x = self.embed(input_ids)
        cos, sin = rotary_tables(*self.rotary(x, cache.positions))
        mask = cache.attention_mask()
        for index, layer in enumerate(self.layers):
            groups = layer.groups
            x = decoder_layer(
                x,
                layer.norms,
                layer.shape,
                cos,
                sin,
                lambda group, h, groups=groups: self._project(groups[group], h, bank),
                lambda k, v, index=index: cache.update(k, v, index),
                lambda q, keys, values, layer=layer: self._attend(layer, q, keys, values, mask),
                F.silu if self.silu else layer.act,
            )
        return x

    def logits(self, hidden: torch.Tensor, bank: LoraBank | None) -> torch.Tensor:
        """float32 next-token scores ``[rows, vocab]`` of hidden states ``[rows, hidden]``."""
        normed = rms_norm(hidden, self.norm.weight, self.norm.variance_epsilon)
        return self._project(self.head, normed, bank).float()

    @staticmethod
    def _attend(layer: _Layer, q, keys, values, mask) -> torch.Tensor:
        """Attention of ``q`` (``[rows, q, heads, head_dim]``) over the rows' cached keys and
        values (``[rows, kv_heads, span, head_dim]``) under ``mask`` (None: every column);
        ``[rows, q, heads * head_dim]``."""
        rows, length, heads, head_dim = q.shape
        groups = heads // layer.kv_heads
        if length == 1 and groups > 1:
            # One query per row: fold each kv head's query heads into the query axis, so the
            # kernel reads every key once (what transformers' sdpa path does for decoding).
            q = q[:, 0].reshape(rows, layer.kv_heads, groups, head_dim)
            out = F.scaled_dot_product_attention(q, keys, values, mask, scale=layer.scaling)
            return out.reshape(rows, 1, heads * head_dim)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys, values, mask, scale=layer.scaling, enable_gqa=groups > 1
        )
        return out.transpose(1, 2).reshape(rows, length, heads * head_dim)
