"""Batch widths in bf16 training on CPU: each batch as wide as its longest row, or rounded up
to a multiple of 64 tokens (what ``tuneforge train`` does in bf16 on CPU), side by side.

Why it matters: in bf16, oneDNN makes a kernel for each new matrix shape and keeps it, so a run
whose batches all differ in width meets a new shape at most steps: it slows, and its memory
grows with every shape. fp32 products (MKL) make no kernel per shape. Two measurements, each
variant in a fresh process, variants alternating:

1. ``products``: a SwiGLU-sized MLP (576 -> 1536 -> 576), forward and backward, batch 4, 120
   widths drawn from 100-900 tokens, exact vs rounded to 64; bf16 and fp32. Tokens/s counts
   real (unpadded) tokens; peak RSS at the end.
2. ``train``: the same ``tuneforge train`` LoRA run in bf16, unpacked batches of different
   lengths, with the rounding off (multiple 1) and on (64): real tokens/s and peak memory from
   the run's summary.

Usage (the data ``tuneforge compare --budget quick`` trains its RAFT adapter on)::

    tuneforge compare --out /tmp/cmp --budget quick     # writes /tmp/cmp/data/raft.jsonl
    .venv/bin/python bench/train_shapes.py --data /tmp/cmp/data/raft.jsonl
    .venv/bin/python bench/train_shapes.py --only products   # no data needed

Writes bench/results/train_shapes.md (a full run only).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, report

MULTIPLE = 64


def products(dtype_name: str, multiple: int) -> dict:
    """Child process: the MLP over 120 drawn widths; real tokens/s per 30 steps, peak RSS."""
    import torch

    torch.set_num_threads(2)
    dtype = getattr(torch, dtype_name)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(576, 1536), torch.nn.SiLU(), torch.nn.Linear(1536, 576)
    ).to(dtype)
    rng = random.Random(0)
    widths = [rng.randint(100, 900) for _ in range(120)]
    rates, real, started = [], 0, time.perf_counter()
    for index, width in enumerate(widths):
        padded = -(-width // multiple) * multiple
        x = torch.randn(4, padded, 576, dtype=dtype, requires_grad=True)
        mlp(x).float().pow(2).mean().backward()
        real += 4 * width
        if index % 30 == 29:
            now = time.perf_counter()
            rates.append(real / (now - started))
            real, started = 0, now
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"rates": rates, "peak_gib": peak_gib}


def train(data: Path, multiple: int, args: argparse.Namespace, out: Path) -> dict:
    """Child process: one bf16 LoRA ``tuneforge train`` run with widths rounded to ``multiple``."""
    import tuneforge.train.run as run
    from tuneforge.cli import main

    run.CPU_BF16_WIDTH_MULTIPLE = multiple
    argv = [
        "train", "--model", args.model, "--data", str(data), "--method", "lora",
        "--max-steps", str(args.steps), "--batch-size", "4", "--max-length", "1024",
        "--lora-r", "16", "--lr", "1e-3", "--seed", "0", "--dtype", "bfloat16",
        "--out", str(out), "--force", "--no-progress",
    ]  # fmt: skip
    if main(argv) != 0:
        sys.exit("tuneforge train failed")
    return json.loads((out / "summary.json").read_text())


def child(kind: str, *extra: str) -> dict:
    """Run one measurement in a fresh process (its stdout's last line is JSON)."""
    command = [sys.executable, __file__, "--child", kind, *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="training data (jsonl) for the train section")
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per section")
    parser.add_argument("--only", choices=["products", "train"])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *extra = args.child
        if kind == "products":
            result = products(extra[0], int(extra[1]))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result = train(Path(extra[0]), int(extra[1]), args, Path(tmp) / "run")
        print(json.dumps(result))
        return
    if args.only != "products" and (args.data is None or not args.data.is_file()):
        sys.exit(f"--data {args.data}: no such file; `tuneforge compare --out DIR` writes "
                 "DIR/data/raft.jsonl (or run --only products)")  # fmt: skip

    sections = []
    if args.only in (None, "products"):
        rows = []
        for round_ in range(args.rounds):
            for dtype in ("bfloat16", "float32"):
                for multiple in (1, MULTIPLE):
                    got = child("products", dtype, str(multiple))
                    rates = " / ".join(f"{rate:,.0f}" for rate in got["rates"])
                    print(f"products {dtype} x{multiple}: {rates} tok/s", flush=True)
                    rows.append(
                        [
                            str(round_ + 1),
                            dtype,
                            "exact" if multiple == 1 else f"multiple of {multiple}",
                            rates,
                            f"{sum(got['rates']) / len(got['rates']):,.0f}",
                            f"{got['peak_gib']:.2f}",
                        ]
                    )
        sections += [
            "### Products only: MLP 576-1536-576, forward + backward, batch 4, 120 widths "
            "drawn from 100-900",
            markdown_table(
                [
                    "round",
                    "dtype",
                    "widths",
                    "real tokens/s per 30 steps",
                    "mean",
                    "peak RSS GiB",
                ],
                rows,
            ),
        ]
    if args.only in (None, "train"):
        rows = []
        for round_ in range(args.rounds):
            for multiple in (1, MULTIPLE):
                got = child("train", str(args.data), str(multiple), "--steps", str(args.steps))
                print(f"train x{multiple}: {json.dumps(got)[:300]}", flush=True)
                rows.append(
                    [
                        str(round_ + 1),
                        "exact" if multiple == 1 else f"multiple of {multiple}",
                        f"{got['tokens_per_s']:.0f}",
                        f"{got['peak_memory_bytes'] / 2**30:.2f}",
                        f"{got['train_seconds']:.0f}",
                        f"{got['final_loss']:.4f}",
                    ]
                )
        sections += [
            f"### `tuneforge train`, LoRA r=16, bf16, batch 4, max length 1024, {args.steps} "
            f"steps on {args.data.name}",
            markdown_table(
                ["round", "widths", "real tokens/s", "peak memory GiB", "train s", "last loss"],
                rows,
            ),
        ]
    body = "\n\n".join(sections)
    if args.only:
        print(body)
        return
    report("train_shapes", "Batch widths in bf16 training on CPU", body)


if __name__ == "__main__":
    main()
