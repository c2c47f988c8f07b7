"""How much of a single-stream decode step is the weights' products alone? (issue 18)

A batch-1 decode step reads every weight once, so its floor is the time the products take to
read them. This bench measures, in one process, on the default model in bf16 and 2 threads:

1. ``read``: summing a bf16 tensor as large as the model's weights (the memory bandwidth a
   reduction reaches here);
2. ``products``: every packed product of one decode step (the fused q/k/v, o, gate/up, down of
   each layer and the head, the weights the fast path packs), one token, in order, nothing
   else (not per kind: one kind's 33-106 MB stays in this CPU's 480 MB L3 cache between
   repeated calls and reads 2-3x faster than a step does);
3. ``fast path``: a whole eager step of ``BatchDecoder`` (one row, 64 steps after 8 warm-up);
   ``--compiled`` adds the compiled step (``serve --compile``; compiling takes a minute cold);
4. ``llama.cpp``: its step on the f16 GGUF export, from a 129-token and a 1-token greedy answer
   to the same prompt (their difference: 128 steps without the prompt), when importable.

The ratio that matters: the products alone against llama.cpp's whole step, and what 0.8x of
llama.cpp's speed leaves for everything around the products.

    .venv/bin/python bench/decode_bandwidth.py
    .venv/bin/python bench/decode_bandwidth.py --compiled

Writes bench/results/decode_bandwidth.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import DEFAULT_HOME, markdown_table, report
from decode import PROMPT, llama_cpp_engine


def timed(function, repeats: int) -> float:
    """Median seconds of ``function()`` over ``repeats`` calls, after 3 warm-up calls."""
    for _ in range(3):
        function()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def product_groups(model) -> list[tuple[str, tuple]]:
    """``(name, modules)`` of every product of one decode step, in the order it runs."""
    from tuneforge.generation.llama_forward import LlamaForward

    forward = LlamaForward(model)
    groups = []
    for layer in forward.layers:
        groups += [
            ("q/k/v", layer.qkv),
            ("o", layer.out),
            ("gate/up", layer.gate_up),
            ("down", layer.down),
        ]
    return [*groups, ("head", forward.head)]


def step_seconds(model, tokenizer, compiled: bool, steps: int = 64) -> float:
    """Median seconds of one single-row decode step on the fast path."""
    from tuneforge.generation import GenerationSettings, Row, chat_messages, prompt_ids
    from tuneforge.generation.compiled_step import compile_decode_steps
    from tuneforge.generation.decoding import new_batch_decoder

    compile_decode_steps(compiled)
    try:
        decoder = new_batch_decoder(model, tokenizer)
        row = Row(
            prompt_ids(tokenizer, chat_messages(PROMPT)),
            GenerationSettings(max_new_tokens=steps + 16),
        )
        decoder.join(model, [row])
        return timed(lambda: decoder.step(model), steps)
    finally:
        compile_decode_steps(False)


def llama_cpp_step(home: Path, threads: int) -> tuple[float | None, str]:
    """llama.cpp's seconds per decode step (prompt excluded), or None and why."""
    engine, skipped = llama_cpp_engine(home, threads)
    if engine is None:
        return None, skipped
    runs = []
    for _ in range(3):
        long_started = time.perf_counter()
        made = engine.single(129)
        long_seconds = time.perf_counter() - long_started
        short_started = time.perf_counter()
        engine.single(1)
        runs.append((long_seconds - (time.perf_counter() - short_started)) / (made - 1))
    return statistics.median(runs), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--compiled", action="store_true", help="also the compiled step")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="tuneforge cache root")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tuneforge.generation.packed_linear import PACKED_LINEARS
    from tuneforge.models import load_model
    from tuneforge.models.bundled import ensure_default_model

    model_dir = ensure_default_model(args.home, progress=False)
    loaded = load_model(str(model_dir), dtype="bfloat16", device="cpu", progress=False)
    groups = product_groups(loaded.model)
    products = [PACKED_LINEARS.product(modules) for _, modules in groups]
    inputs = [torch.zeros(1, 1, m[0].in_features, dtype=torch.bfloat16) for _, m in groups]
    total_bytes = sum(m.weight.numel() * 2 for _, modules in groups for m in modules)

    def all_products() -> None:
        for product, x in zip(products, inputs, strict=True):
            product(x)

    with torch.inference_mode():
        block = torch.ones(total_bytes // 2, dtype=torch.bfloat16)
        read = timed(block.sum, args.repeats)
        del block
        every = timed(all_products, args.repeats)
        eager = step_seconds(loaded.model, loaded.tokenizer, compiled=False)
        compiled = (
            step_seconds(loaded.model, loaded.tokenizer, compiled=True) if args.compiled else None
        )
    llama, skipped = llama_cpp_step(args.home, args.threads)

    def row(what: str, seconds: float | None, read_rate: bool = False) -> list[str] | None:
        if seconds is None:
            return None
        rate = f"{total_bytes / seconds / 1e9:.1f}" if read_rate else ""
        ratio = "" if llama is None else f"{seconds / llama:.2f}"
        return [what, f"{seconds * 1e3:.2f}", rate, ratio]

    rows = [
        row("read: sum of a bf16 tensor of the weights' size", read, read_rate=True),
        row("products of one step (all groups, nothing else)", every, read_rate=True),
        row("tuneforge fast path, eager step", eager),
        row("tuneforge fast path, compiled step", compiled),
        row("llama.cpp f16 step (prompt excluded)", llama),
    ]
    rows = [r for r in rows if r is not None]
    rows[0][3] = ""  # the read is not a step
    table = markdown_table(["what", "ms", "GB/s of weights", "x llama.cpp step"], rows)
    lines = [
        f"Default model, bf16 weights ({total_bytes / 1e6:.0f} MB read per step), batch 1, "
        f"{args.threads} threads; medians of {args.repeats} calls (steps: 64).",
        "",
        table,
        "",
    ]
    if llama is None:
        lines.append(f"llama.cpp row skipped: {skipped}")
    else:
        budget = llama / 0.8
        lines.append(
            f"0.8x llama.cpp's tokens/s is a step of {budget * 1e3:.2f} ms: after the products "
            f"({every * 1e3:.2f} ms) that leaves {(budget - every) * 1e3:.2f} ms for everything "
            "else (norms, rotary, attention, residuals, the cache, sampling, Python)."
        )
    report(
        "decode_bandwidth", "Single-stream decode: the products' share of a step", "\n".join(lines)
    )


if __name__ == "__main__":
    main()
