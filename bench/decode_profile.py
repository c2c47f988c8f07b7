"""torch.profiler summaries of decoding, plain path vs fast path, batch 1 and 16.

The tables that chose each change of the fast path (docs/decode.md tells the story): where a
decode step's time goes (self CPU time per operator, summed over the run), how many operators
run per generated step, and what share the matmuls take.

    .venv/bin/python bench/decode_profile.py          # bf16 where native (auto), 2 threads
    .venv/bin/python bench/decode_profile.py --dtype float32

Writes bench/results/decode_profile.md (``bench/decode.py --profile`` runs it too).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, report

DEFAULT_HOME = Path.home() / ".cache" / "tuneforge-test-default"
QUESTIONS = [
    "Write a short story about a robot who learns to paint.",
    "What is the capital of France?",
    "Give me three tips for learning a language.",
    "Why is the sky blue?",
]
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise")


def profile_path(loaded, path: str, batch: int, new_tokens: int) -> str:
    """One markdown section: the top operators of ``batch`` rows decoding ``new_tokens``."""
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

    run(loaded.model, tokenizer, rows())  # warm-up (packing on the fast path)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        replies = run(loaded.model, tokenizer, rows())
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
    return (
        f"#### {path} path, {dtype}, batch {batch} ({steps} steps, prefill included)\n\n"
        f"{total / 1e3 / steps:.1f} ms of operator time and {calls / steps:.0f} operator calls "
        f"per step; matmuls {100 * matmul / total:.0f}% of the time.\n\n{table}"
    )


def profile_report(loaded, new_tokens: int = 16) -> str:
    """Profile the plain and fast paths at batch 1 and 16; write decode_profile.md."""
    sections = [
        profile_path(loaded, path, batch, new_tokens)
        for batch in (1, 16)
        for path in ("plain", "fast")
    ]
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
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="tuneforge cache root")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tuneforge.models import load_model
    from tuneforge.models.bundled import ensure_default_model

    model_dir = ensure_default_model(args.home, progress=False)
    loaded = load_model(str(model_dir), dtype=args.dtype, device="cpu", progress=False)
    profile_report(loaded, args.new_tokens)


if __name__ == "__main__":
    main()
