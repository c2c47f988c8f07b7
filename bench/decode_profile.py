"""torch.profiler summaries of decoding, plain path vs fast path, batch 1 and 16.

The tables that chose each change of the fast path (docs/decode.md tells the story): where a
decode step's time goes (self CPU time per operator, summed over the run), how many operators
run per generated step, what share the matmuls take, and how much of the step's wall time is
spent outside operators (Python, module calls, the framework). The plain path in float32 is
the old default; bf16 rows show the dtype ``auto`` picks on CPUs with native bf16.

    .venv/bin/python bench/decode_profile.py                  # float32 and auto, 2 threads
    .venv/bin/python bench/decode_profile.py --dtype float32  # one dtype

Writes bench/results/decode_profile.md (``bench/decode.py --profile`` runs it too).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import DEFAULT_HOME, markdown_table, report

QUESTIONS = [
    "Write a short story about a robot who learns to paint.",
    "What is the capital of France?",
    "Give me three tips for learning a language.",
    "Why is the sky blue?",
]
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise")


def profile_path(
    loaded, path: str, batch: int, new_tokens: int, adapters: list[str] | None = None
) -> str:
    """One markdown section: the top operators of ``batch`` rows decoding ``new_tokens``, on
    the peft adapters ``adapters`` (one name per row, ``"__base__"``: none) when given."""
    from torch.profiler import ProfilerActivity, profile

    from tuneforge.generation import GenerationSettings, Row, chat_messages, generate_rows
    from tuneforge.generation import prompt_ids as ids_of
    from tuneforge.generation.decoding import generate_rows_plain

    run = generate_rows if path == "fast" else generate_rows_plain
    tokenizer = loaded.tokenizer

    def rows():
        settings = GenerationSettings(max_new_tokens=new_tokens)
        prompts = [QUESTIONS[i % len(QUESTIONS)] for i in range(batch)]
        return [Row(ids_of(tokenizer, chat_messages(p)), settings) for p in prompts]

    run(loaded.model, tokenizer, rows(), adapters)  # warm-up (packing on the fast path)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        replies = run(loaded.model, tokenizer, rows(), adapters)
        wall = time.perf_counter() - start
    steps = max(reply.completion_tokens for reply in replies)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    table = markdown_table(
        ["operator", "self CPU %", "ms per step", "calls per step"],
        [
            [
                e.key,
                f"{100 * e.self_cpu_time_total / total:.1f}",
                f"{e.self_cpu_time_total / 1e3 / steps:.2f}",
                f"{e.count / steps:.0f}",
            ]
            for e in top
        ],
    )
    dtype = str(loaded.model.dtype).removeprefix("torch.")
    on = f", rows on {len(set(adapters))} adapters {sorted(set(adapters))}" if adapters else ""
    return (
        f"#### {path} path, {dtype}, batch {batch}{on} ({steps} steps, prefill included)\n\n"
        f"{wall * 1e3 / steps:.1f} ms wall per step, of which {total / 1e3 / steps:.1f} ms in "
        f"operators ({calls / steps:.0f} operator calls per step, nested ones included; the "
        f"rest is Python and module calls between them); matmuls {100 * matmul / total:.0f}% "
        f"of the operator time.\n\n{table}"
    )


def profile_report(models: dict, new_tokens: int = 16, with_adapters=None) -> str:
    """Profile the plain path in fp32 (the old default) and both paths in each dtype of
    ``models`` (dtype name -> loaded model) at batch 1 and 16, and, given a peft model
    ``with_adapters`` holding ``lora0``..``lora3``, the fast path's 16 rows on the base vs
    spread over the 4 adapters; write decode_profile.md."""
    sections = []
    if "float32" in models:
        sections.append(profile_path(models["float32"], "plain", 1, new_tokens))
    for dtype, loaded in models.items():
        for batch in (1, 16):
            paths = ("fast",) if dtype == "float32" and batch == 1 else ("plain", "fast")
            sections += [profile_path(loaded, path, batch, new_tokens) for path in paths]
    if with_adapters is not None:
        mixed = [f"lora{index % 4}" for index in range(16)]
        for names in (["__base__"] * 16, mixed):
            sections.append(profile_path(with_adapters, "fast", 16, new_tokens, names))
    load = os.getloadavg()
    header = (
        f"Default model (SmolLM2-135M-Instruct), greedy, {new_tokens} new tokens per row. "
        f"Load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (1/5/15 min) at the end: "
        "operator times stretch when other processes share the cores; the shares and call "
        "counts are the steadier numbers."
    )
    return report(
        "decode_profile",
        "Decoding profile: plain path vs fast path",
        "\n\n".join([header, *sections]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", default=["float32", "auto"], help="dtypes to profile")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="tuneforge cache root")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tuneforge.models import load_model
    from tuneforge.models.bundled import ensure_default_model

    model_dir = ensure_default_model(args.home, progress=False)
    models = {}
    for dtype in args.dtype:
        loaded = load_model(str(model_dir), dtype=dtype, device="cpu", progress=False)
        models[str(loaded.model.dtype).removeprefix("torch.")] = loaded
    profile_report(models, args.new_tokens)


if __name__ == "__main__":
    main()
