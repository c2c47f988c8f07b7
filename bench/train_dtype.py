"""Training dtype on this CPU: the same LoRA run in fp32 and in bf16, alternating, side by side.

What ``dtype: auto`` chooses for training (bf16 where the device computes it natively) rests on
this ratio. Each round trains the same steps on the same data in a fresh process per dtype
(``tuneforge train``), fp32 then bf16, and reads the run's summary: real (non-pad) tokens/s,
peak memory and the last loss. Rounds alternate so that a machine whose speed drifts (a shared
VM) disturbs both dtypes alike; compare within a round.

Usage (the data ``tuneforge compare --budget quick`` trains its RAFT adapter on)::

    tuneforge compare --out /tmp/cmp --budget quick     # writes /tmp/cmp/data/raft.jsonl
    .venv/bin/python bench/train_dtype.py --data /tmp/cmp/data/raft.jsonl --max-length 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, report

DTYPES = ("float32", "bfloat16")


def run_once(data: Path, dtype: str, args: argparse.Namespace, out: Path) -> dict:
    """One ``tuneforge train`` run in its own process; its summary.json."""
    command = [
        sys.executable, "-m", "tuneforge", "train", "--model", args.model, "--data", str(data),
        "--method", "lora", "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--max-length", str(args.max_length), "--lora-r", "16", "--lr", "1e-3", "--seed", "0",
        "--dtype", dtype, "--out", str(out), "--force", "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"train --dtype {dtype} failed:\n{done.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="training data (jsonl)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2, help="alternating fp32/bf16 rounds")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(
            f"{args.data}: no such file; `tuneforge compare --out DIR` writes DIR/data/raft.jsonl"
        )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            rates = {}
            for dtype in DTYPES:
                summary = run_once(args.data, dtype, args, Path(tmp) / dtype)
                rates[dtype] = summary["tokens_per_s"]
                rows.append([
                    round_, dtype, f"{summary['tokens_per_s']:.0f}",
                    f"{summary['peak_memory_bytes'] / 2**30:.2f}", f"{summary['final_loss']:.3f}",
                    f"{rates[dtype] / rates['float32']:.2f}x",
                ])  # fmt: skip
    body = (
        f"LoRA r=16 on every linear but the head, `{args.data.name}`, batch {args.batch_size}, "
        f"max length {args.max_length}, {args.steps} steps per run, seed 0, one fresh process "
        "per run, fp32 and bf16 alternating.\n\n"
        + markdown_table(
            ["round", "dtype", "real tokens/s", "peak memory GiB", "last loss", "vs fp32 (round)"],
            rows,
        )
    )
    report("train_dtype", "Training dtype: fp32 vs bf16 on this CPU", body)


if __name__ == "__main__":
    main()
