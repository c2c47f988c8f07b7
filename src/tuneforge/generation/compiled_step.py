"""A single-row decode step compiled with ``torch.compile``: every layer in one graph, one call.

At batch 1 the eager lean forward (``llama_forward``) spends about a third of a step around its
products: some 5,000 small operators a token, each a Python call and a kernel launch
(docs/decode.md). Compiling one decoder layer at a time removed operators but not time: each
compiled call costs about 110 µs of guards and entry (bench/decode_compile.py). Compiled here
instead is the whole step, all layers in one graph, so a token costs one call: RMSNorm,
rotary embedding, residuals and SwiGLU become a few generated C++ kernels between the products.

- bf16 weights on a CPU with native bf16 products are the packed oneDNN weights that the eager
  path uses (``packed_linear``); inductor accepts such a weight only as a frozen constant, so the
  graph calls them through an opaque operator, ``tuneforge::packed_linear``; other weights run
  as ``F.linear``.
- Shapes are static but for the cache's column count (marked dynamic): attention reads every
  column of the row's slot under a mask, so a growing reply does not recompile.
- Only one row's step in slot 0, on the base weights, runs here (the rows of a batch already
  share each step's overhead); prefills, batches and rows on adapters stay eager.

Off by default: the first compile of a model takes about a minute here (seconds once inductor's
cache on disk holds it). ``compile_decode_steps(True)`` turns it on for the process
(``tuneforge serve --compile``, which compiles while it starts, before it answers anyone;
``generate`` does not compile: one answer cannot pay for it). If compiling fails (no C++ compiler, an unsupported
operator), a warning says so and decoding stays eager.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from tuneforge.generation.llama_forward import (
    LlamaForward,
    _base_layer,
    decoder_layer,
    rotary_tables,
)
from tuneforge.generation.packed_linear import PACKED_LINEARS, packed_linear

logger = logging.getLogger(__name__)

_LIBRARY = torch.library.Library("tuneforge", "DEF")
_LIBRARY.define("packed_linear(Tensor x, Tensor packed, Tensor? bias) -> Tensor")
# a plain Library op: its dispatch costs about 10 µs a call here, torch.library.custom_op's 27
_LIBRARY.impl("packed_linear", packed_linear, "CompositeExplicitAutograd")


@torch.library.register_fake("tuneforge::packed_linear")
def _packed_linear_shape(x, packed, bias):
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


_ENABLED = {"on": False}


def compile_decode_steps(on: bool = True) -> None:
    """Compile single-row decode steps in this process from now on (``on``), or stop."""
    _ENABLED["on"] = on


def decode_steps_compiled() -> bool:
    """Whether ``compile_decode_steps`` turned compiling on."""
    return _ENABLED["on"]


def compile_blocker(forward: LlamaForward) -> str | None:
    """Why ``forward``'s decode steps cannot be compiled here, or None."""
    if not forward.silu:
        return "the model's MLP activation is not SiLU"
    for layer in forward.layers:
        for group in (layer.qkv, layer.out, layer.gate_up, layer.down):
            if any(type(_base_layer(module)) is not nn.Linear for module in group):
                return "some projections are not plain linear layers (quantized weights?)"
    return None


class CompiledStep:
    """``LlamaForward.hidden`` of one row's decode step, compiled (module doc).

    Args:
        forward: the eager forward whose modules' weights the step reads.
    """

    def __init__(self, forward: LlamaForward) -> None:
        self.forward = forward
        first = forward.layers[0]
        groups = [[_bases(group) for group in layer.groups] for layer in forward.layers]
        packs = [[PACKED_LINEARS.packed(group) for group in layer] for layer in groups]
        # all products packed (bf16 on a CPU with native bf16), or all as F.linear
        self.packed = all(pack is not None for layer in packs for pack in layer)
        self.weights = [
            (
                *layer.norms[0],  # the RMSNorm weights: input, post-attention, q, k
                *(
                    pack if self.packed else tuple((one.weight, one.bias) for one in group)
                    for group, pack in zip(layer_groups, layer_packs, strict=True)
                ),
            )
            for layer, layer_groups, layer_packs in zip(forward.layers, groups, packs, strict=True)
        ]
        self._step = torch.compile(
            _step_function(*first.norms[1], *first.shape, first.scaling, self.packed),
            dynamic=False,
            fullgraph=True,
        )
        self.failed: str | None = None
        self.compile_seconds: float | None = None  # wall time of the first call (compiling)

    def __call__(self, input_ids: torch.Tensor, cache) -> torch.Tensor | None:
        """Hidden states ``[1, 1, hidden]`` of one row's next token (``cache`` placed at slot 0),
        or None when this step could not be compiled (the caller runs it eagerly)."""
        if self.failed is not None:
            return None
        forward = self.forward
        x = forward.embed(input_ids)
        cos, sin = rotary_tables(*forward.rotary(x, cache.positions))
        keys = [layer[:1] for layer in cache.keys]
        values = [layer[:1] for layer in cache.values]
        args = (x, cos, sin, cache._write_index, cache.positions, keys, values, self.weights)
        if self.compile_seconds is not None:
            return self._step(*args)
        # the compiled graph takes any column count; marking later calls too costs guard time
        for tensor in (*keys, *values):
            torch._dynamo.maybe_mark_dynamic(tensor, 2)
        started = time.perf_counter()
        try:
            hidden = self._step(*args)
        except Exception as error:  # any compile failure: decode eagerly
            self.failed = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            logger.warning("compiled decode step unavailable, decoding eagerly: %s", self.failed)
            return None
        self.compile_seconds = time.perf_counter() - started
        return hidden


def compiled_step_for(forward: LlamaForward) -> CompiledStep | None:
    """A ``CompiledStep`` for ``forward`` when compiling is on and possible, else None."""
    if not decode_steps_compiled():
        return None
    blocker = compile_blocker(forward)
    if blocker is not None:
        logger.info("decode steps not compiled: %s", blocker)
        return None
    return CompiledStep(forward)


def _bases(group: tuple[nn.Module, ...]) -> tuple[nn.Module, ...]:
    return tuple(_base_layer(module) for module in group)


def _step_function(eps, head_eps, heads, kv_heads, head_dim, scaling, packed):
    """The step as a function of its tensors; the model's constants are closed over. Each
    layer is ``llama_forward.decoder_layer`` with this step's products, cache writes (into slot
    0's view) and attention (over the whole slot under a mask)."""
    shape = (heads, kv_heads, head_dim)

    def product(x, weights):
        if packed:
            weight, bias = weights
            return torch.ops.tuneforge.packed_linear(x, weight, bias)
        outs = [F.linear(x, weight, bias) for weight, bias in weights]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def step(x, cos, sin, write_index, positions, keys, values, layers):
        columns = keys[0].shape[2]
        mask = (torch.arange(columns, device=x.device) <= positions[0, 0])[None, None, None]
        for index, (in_w, post_w, q_w, k_w, *products) in enumerate(layers):

            def store(k, v, index=index):
                keys[index].view(-1, head_dim).index_put_((write_index,), k)
                values[index].view(-1, head_dim).index_put_((write_index,), v)
                return keys[index], values[index]

            def attend(q, layer_keys, layer_values):
                # one query per row: each kv head's query heads along the query axis
                q = q[:, 0].reshape(1, kv_heads, heads // kv_heads, head_dim)
                out = F.scaled_dot_product_attention(
                    q, layer_keys, layer_values, mask, scale=scaling
                )
                return out.reshape(1, 1, heads * head_dim)

            x = decoder_layer(
                x,
                ((in_w, post_w, q_w, k_w), (eps, head_eps)),
                shape,
                cos,
                sin,
                lambda group, h, products=products: product(h, products[group]),
                store,
                attend,
            )
        return x

    return step
