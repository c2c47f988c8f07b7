"""Does compiling the lean forward's layers remove the per-token overhead? (issue 18)

An experiment: it measures a batch-1 bf16 decode step of the default model with the layers of
``LlamaForward`` run in several ways (``--variants``), interleaved in one process:

- ``eager``: the package's lean forward as it is;
- ``compiled``: one decoder layer as a function of its weights (every layer shares one graph,
  no weight is frozen), ``torch.compile`` (inductor), static shapes: attention reads every
  column of the slot under a mask, so the growing cache does not recompile every step;
- ``whole``: every layer in one compiled graph, one call (and one set of guards) a step: the
  variant the package adopted (``generation/compiled_step.py``, ``serve --compile``);
- ``unguarded``: ``whole`` called under ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``.

Per layer, each compiled call costs about 110 µs of guards and entry here (3.4 ms a step of 30
layers): what ``whole`` removes.

Inductor only accepts a packed oneDNN weight as a frozen constant
(``torch/_inductor/mkldnn_lowerings.py``: ``assert w.get_name() in V.graph.constants``), so the
compiled layer calls the packed products through an opaque op (``tfbench::packed_linear``),
with weights packed here as ``packed_linear`` does. ``--stub`` replaces every product by an
empty output of its shape: what is left is the overhead around the products (Python, small
kernels, dynamo), the part a compiled step can remove.

    .venv/bin/python bench/decode_compile.py --threads 1 --stub   # overhead per step
    .venv/bin/python bench/decode_compile.py --threads 2          # whole steps
    .venv/bin/python bench/decode_compile.py --threads 2 --variants eager whole unguarded
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from common import DEFAULT_HOME
from tuneforge.generation.packed_linear import pack_weight, packed_linear

PROMPT = "Write a long story about a robot who learns to paint. Describe every day of its life."
STUB = {"on": False}

_LIBRARY = torch.library.Library("tfbench", "DEF")
_LIBRARY.define("packed_linear(Tensor x, Tensor packed) -> Tensor")


def _packed_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    if STUB["on"]:
        return x.new_empty((*x.shape[:-1], packed.shape[0]))
    return packed_linear(x, packed)


# a plain Library op: dispatch costs about 10 µs a call here, torch.library.custom_op's about 27
_LIBRARY.impl("packed_linear", _packed_linear, "CompositeExplicitAutograd")


@torch.library.register_fake("tfbench::packed_linear")
def _packed_linear_shape(x, packed):
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (inductor compiles in workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class CompiledLayers:
    """``LlamaForward.hidden`` for batch-1 decode steps with the layer body compiled."""

    def __init__(self, forward) -> None:
        from tuneforge.generation.llama_forward import rms_norm, rotate

        first = forward.layers[0]
        eps, heads = first.input_norm.variance_epsilon, first.heads
        kv_heads, head_dim, scaling = first.kv_heads, first.head_dim, first.scaling

        def layer(x, cos, sin, write_index, keys, values, mask, in_w, post_w, qkv, out, gu, down):
            rows = x.shape[0]
            qkv_out = torch.ops.tfbench.packed_linear(rms_norm(x, in_w, eps), qkv)
            width = (heads + kv_heads) * head_dim
            qk = rotate(qkv_out[..., :width].view(rows, 1, heads + kv_heads, head_dim), cos, sin)
            q, k = qk[:, :, :heads], qk[:, :, heads:]
            v = qkv_out[..., width:].view(rows, 1, kv_heads, head_dim)
            keys.view(-1, head_dim).index_put_((write_index,), k.transpose(1, 2))
            values.view(-1, head_dim).index_put_((write_index,), v.transpose(1, 2))
            q = q[:, 0].reshape(rows, kv_heads, heads // kv_heads, head_dim)
            attended = F.scaled_dot_product_attention(
                q, keys[:rows], values[:rows], mask, scale=scaling
            ).reshape(rows, 1, heads * head_dim)
            x = x + torch.ops.tfbench.packed_linear(attended, out)
            gate, up = torch.ops.tfbench.packed_linear(rms_norm(x, post_w, eps), gu).chunk(2, -1)
            return x + torch.ops.tfbench.packed_linear(F.silu(gate) * up, down)

        def pack(modules):
            weight = torch.cat([module.weight.detach() for module in modules])
            return pack_weight(weight)

        self.forward = forward
        self.weights = [
            (
                one.input_norm.weight,
                one.post_norm.weight,
                *(pack(group) for group in (one.qkv, one.out, one.gate_up, one.down)),
            )
            for one in forward.layers
        ]
        self.layer = layer
        self.compiled = torch.compile(layer, dynamic=False, fullgraph=True)
        self.first_call: tuple[float, float] | None = None  # (CPU s, wall s)

    def inputs(self, input_ids, cache):
        """``(x, cos, sin, mask)`` of a step: what every layer reads besides its weights."""
        from tuneforge.generation.llama_forward import rotary_tables

        forward = self.forward
        x = forward.embed(input_ids)
        cos, sin = rotary_tables(*forward.rotary(x, cache.positions))
        return x, cos, sin, (torch.arange(cache.columns) < cache.span)[None, None, None]

    def hidden(self, input_ids, cache):
        x, cos, sin, mask = self.inputs(input_ids, cache)
        started = (cpu_seconds(), time.perf_counter()) if self.first_call is None else None
        for index, weights in enumerate(self.weights):
            args = (x, cos, sin, cache._write_index, cache.keys[index], cache.values[index], mask)
            x = self.compiled(*args, *weights)
        if started is not None:
            self.first_call = (cpu_seconds() - started[0], time.perf_counter() - started[1])
        return x


class CompiledStep(CompiledLayers):
    """Every layer in one compiled graph: one call (and one set of guards) per step."""

    def __init__(self, forward, skip_guards: bool = False) -> None:
        super().__init__(forward)
        layer = self.layer

        def step(x, cos, sin, write_index, mask, keys, values, weights):
            for index, one in enumerate(weights):
                x = layer(x, cos, sin, write_index, keys[index], values[index], mask, *one)
            return x

        self.compiled = torch.compile(step, dynamic=False, fullgraph=True)
        self.skip_guards = skip_guards

    def hidden(self, input_ids, cache):
        x, cos, sin, mask = self.inputs(input_ids, cache)
        started = (cpu_seconds(), time.perf_counter()) if self.first_call is None else None
        args = (x, cos, sin, cache._write_index, mask, list(cache.keys), list(cache.values))
        if self.skip_guards and started is None:
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                x = self.compiled(*args, self.weights)
        else:
            x = self.compiled(*args, self.weights)
        if started is not None:
            self.first_call = (cpu_seconds() - started[0], time.perf_counter() - started[1])
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stub", action="store_true", help="products replaced by empty outputs")
    parser.add_argument("--variants", nargs="+", default=["eager", "compiled"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="tuneforge cache root")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tuneforge.generation import GenerationSettings, Row, chat_messages, prompt_ids
    from tuneforge.generation.batch_decoder import BatchDecoder
    from tuneforge.generation.llama_forward import LlamaForward
    from tuneforge.models import load_model
    from tuneforge.models.bundled import ensure_default_model

    model_dir = ensure_default_model(args.home, progress=False)
    loaded = load_model(str(model_dir), dtype="bfloat16", device="cpu", progress=False)
    model, tokenizer = loaded.model, loaded.tokenizer
    eager_hidden = LlamaForward.hidden
    decoders, layers = {}, {}

    def decoder(variant: str) -> BatchDecoder:
        decoding = BatchDecoder(tokenizer, [])
        settings = GenerationSettings(max_new_tokens=100_000)
        decoding.join(model, [Row(prompt_ids(tokenizer, chat_messages(PROMPT)), settings)])
        forward = next(iter(decoding._forwards.values()))[0]
        if variant == "compiled":
            layers[variant] = CompiledLayers(forward)
        elif variant in ("whole", "unguarded"):
            layers[variant] = CompiledStep(forward, skip_guards=variant == "unguarded")
        if args.stub:
            for group in list(forward._products):
                if variant == "eager" or group is forward.head:
                    width = sum(module.out_features for module in group)
                    forward._products[group] = lambda x, n=width: x.new_empty((*x.shape[:-1], n))
        return decoding

    STUB["on"] = args.stub
    with torch.inference_mode():
        for round_ in range(args.rounds):
            for variant in args.variants:
                if variant != "eager":

                    def hidden(self, input_ids, cache, bank, variant=variant):
                        if input_ids.shape[1] != 1 or bank is not None or not cache.in_slot_order:
                            return eager_hidden(self, input_ids, cache, bank)
                        return layers[variant].hidden(input_ids, cache)

                    LlamaForward.hidden = hidden
                if variant not in decoders:
                    decoders[variant] = decoder(variant)
                    for _ in range(3):
                        decoders[variant].step(model)
                decoding = decoders[variant]
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    decoding.step(model)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                LlamaForward.hidden = eager_hidden
                compiled = layers.get(variant)
                warm = ""
                if compiled is not None and compiled.first_call and round_ == 0:
                    warm = f", first call {compiled.first_call[0]:.1f} CPU-s (workers included)"
                    warm += f" {compiled.first_call[1]:.1f} s wall"
                tokens = decoding.entries[0].progress.new_ids[:8]
                print(
                    f"round {round_} {variant:8s} {wall / args.steps * 1e3:6.2f} ms/step, "
                    f"{args.steps / cpu:5.1f} steps per CPU-s, load {os.getloadavg()[0]:.2f}, "
                    f"first tokens {tokens}{warm}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
