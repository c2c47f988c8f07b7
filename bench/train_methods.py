"""Full fine-tuning vs LoRA vs QLoRA on the default model: real tokens/s and peak RSS.

Same data (the JSON-orders demo task), batch, max length, steps and precision for each method;
each method runs in its own subprocess. Two peaks: the process's over its whole life (model load
and 4-bit quantization included) and the training's (``fit`` resets the peak once the model is
ready; what ``metrics.jsonl`` logs and the planner predicts).
Tokens/s is steady state: real tokens of steps 2..N over the time from the end of step 1 to the
end of step N.

    .venv/bin/python bench/train_methods.py           # 10 steps, batch 8, max length 256
    .venv/bin/python bench/train_methods.py --quick   # 4 steps, batch 4, max length 128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, peak_rss_bytes, report

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "tuneforge" / "assets" / "json_orders" / "train.jsonl"
HOME = Path.home() / ".cache" / "tuneforge-test-default"
METHODS = ("full", "lora", "qlora")


def worker(args) -> None:
    """Train one method and print one JSON line with its measurements."""
    import shutil

    from tuneforge.models.bundled import ensure_default_model
    from tuneforge.train import config_from_dict, train
    from tuneforge.train.metrics import read_metrics

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.workdir) / args.worker
    shutil.rmtree(out, ignore_errors=True)
    config = config_from_dict(
        dict(
            model=str(ensure_default_model(HOME, progress=False)),
            data=str(DATA),
            method=args.worker,
            out=str(out),
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_length=args.max_length,
            lr=2e-5 if args.worker == "full" else 2e-4,
            lora_r=8,
            lora_alpha=16,
            dtype=args.dtype,
            progress=False,
        )
    )
    result = train(config, log=lambda _text: None)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    tokens = sum(r["tokens"] for r in rows[1:])
    seconds = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
    print(
        "RESULT "
        + json.dumps(
            {
                "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
                "peak_rss_bytes": peak_rss_bytes(),
                "train_peak_bytes": result.summary["peak_memory_bytes"],
                "trainable": result.summary["trainable_parameters"],
                "total": result.summary["total_parameters"],
                "final_loss": result.summary["final_loss"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 steps, batch 4, max length 128")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    parser.add_argument("--workdir", default="/tmp/tuneforge-bench-train-methods")
    parser.add_argument("--worker", choices=METHODS, default=None)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="both")
    args = parser.parse_args()
    args.steps = args.steps or (4 if args.quick else 10)
    args.batch_size = args.batch_size or (4 if args.quick else 8)
    args.max_length = args.max_length or (128 if args.quick else 256)
    if args.worker:
        worker(args)
        return
    rows = []
    dtypes = ("float32", "bfloat16") if args.dtype == "both" else (args.dtype,)
    for dtype, method in [(d, m) for d in dtypes for m in METHODS]:
        command = [
            sys.executable, __file__, "--worker", method, "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
            "--workdir", args.workdir, "--dtype", dtype,
        ]  # fmt: skip
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
        res = json.loads(line[len("RESULT ") :])
        rows.append(
            [
                "bf16" if dtype == "bfloat16" else "fp32",
                method,
                f"{res['trainable']:,} / {res['total']:,}",
                f"{res['tokens_per_s']:.0f}",
                f"{res['peak_rss_bytes'] / 2**30:.2f}",
                f"{res['train_peak_bytes'] / 2**30:.2f}",
                f"{res['final_loss']:.3f}",
            ]
        )
    body = (
        f"Default model (SmolLM2-135M-Instruct), JSON-orders task, fp32 then bf16 compute, batch "
        f"{args.batch_size}, max length {args.max_length}, {args.steps} steps, "
        f"{args.threads or 'default'} torch threads, LoRA r=8 on every "
        "linear layer but the head; QLoRA = NF4 + double quantization (bitsandbytes CPU backend). "
        "Process peak RSS = the method's own process over its life, model load and "
        "quantization included; training peak RSS = from the first step on (what "
        "metrics.jsonl logs).\n\n"
        + markdown_table(
            [
                "dtype",
                "method",
                "trainable / total params",
                "tokens/s",
                "process peak RSS GiB",
                "training peak RSS GiB",
                "last loss",
            ],
            rows,
        )
    )
    report("train_methods", "Training methods: throughput and memory", body)


if __name__ == "__main__":
    main()
