"""tuneforge vs TRL's DPOTrainer + peft (LoRA DPO): real tokens/s, peak RSS and loss, side by side.

Same model (the bundled default), data (the JSON-orders preference pairs, conversational
prompt/chosen/rejected, ``demo:preference``), batch (8 pairs), max length, LoRA config (r=8,
alpha=16, every linear layer but the head), beta (0.1), learning rate and schedule, precision and
steps. The reference is the base with the adapter disabled in both (TRL's default for a peft
model; tuneforge's ``reference: auto``), computed every step. fp32, then bf16 (each trainer's
own bf16 recipe: TRL loads the base in bf16 with ``bf16=True``; tuneforge ``dtype: bfloat16``).
Activation checkpointing off for both (TRL's DPOConfig default is on). Each run is its own
subprocess, so its peak RSS is its own; runs alternate so the machine's load hits both alike,
and the load average is printed with the results.

Tokens/s counts the same tokens for both: the real (non-pad) tokens of each pair's two
conversations, prompt + chosen and prompt + rejected (TRL's ``attention_mask`` sum; tuneforge's
``tokens``, which counts the prompt twice although it computes it once), so the ratio is the
ratio of pairs per second. Steady state: steps 2..N over the time between the end of step 1 and
the end of step N.

    .venv/bin/python bench/vs_trl_dpo.py --threads 1   # 12 steps, batch 8, max length 256
    .venv/bin/python bench/vs_trl_dpo.py --quick       # 5 steps, batch 4

On a shared machine, ``--threads 1`` keeps each run's OpenMP threads from spinning against other
processes': with 2 threads per run at a load average of 10 on 2 cores, TRL ran 5x and tuneforge
12x slower than with 1 thread at the same load, and the measured ratio (1.5x) was the machine's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, peak_rss_bytes, report
from vs_trl import LORA, steady_rate, train_trl, trl_setup, tuneforge_fields

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "tuneforge" / "assets" / "json_orders" / "preference.jsonl"
BETA = 0.1
LR = 5e-5


def run_tuneforge(args) -> dict:
    """One tuneforge DPO run through ``tuneforge.train.train``; read back its metrics."""
    import shutil

    from tuneforge.train import config_from_dict, train
    from tuneforge.train.metrics import read_metrics

    out = Path(args.workdir) / f"tuneforge-{args.dtype}"
    shutil.rmtree(out, ignore_errors=True)
    config = config_from_dict(tuneforge_fields(args, DATA, out, LR, objective="dpo", beta=BETA))
    train(config, log=lambda _line: None)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    return {
        "tokens": [r["tokens"] for r in rows],
        "ends": [r["elapsed_s"] for r in rows],
        "losses": [r["loss"] for r in rows],
        "accuracies": [r["preference_accuracy"] for r in rows],
    }


def _trl_dataset():
    """The preference pairs as TRL's conversational prompt/chosen/rejected records."""
    from datasets import Dataset

    lines = DATA.read_text(encoding="utf-8").splitlines()
    return Dataset.from_list([json.loads(line) for line in lines if line.strip()])


def run_trl(args) -> dict:
    """One TRL DPOTrainer + peft run, timing each step and counting the collated tokens."""
    from trl import DPOConfig, DPOTrainer

    setup = trl_setup(args, LR)
    config = DPOConfig(output_dir=str(Path(args.workdir) / "trl"), beta=BETA, **setup.common)
    # prompt+chosen and prompt+rejected: the mask's sum
    trainer, tokens = train_trl(
        setup, DPOTrainer, config, _trl_dataset(), lambda batch: int(batch["attention_mask"].sum())
    )
    logged = [row for row in trainer.state.log_history if "loss" in row]
    return {
        "tokens": tokens,
        "ends": setup.ends,
        "losses": [row["loss"] for row in logged],
        "accuracies": [row.get("rewards/accuracies", math.nan) for row in logged],
    }


def worker(args) -> None:
    """Run one configuration and print one JSON line with its measurements."""
    import torch

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_tuneforge(args) if args.worker == "tuneforge" else run_trl(args)
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["tokens_per_s"] = steady_rate(result["tokens"], result["ends"])
    print("RESULT " + json.dumps(result))


def launch(args, which: str, dtype: str) -> dict:
    """Run a worker subprocess and parse its result line."""
    command = [
        sys.executable, __file__, "--worker", which, "--dtype", dtype,
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--max-length", str(args.max_length), "--workdir", args.workdir,
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{which} {dtype} failed:\n{done.stderr[-3000:]}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 steps, batch 4")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    parser.add_argument("--workdir", default="/tmp/tuneforge-bench-vs-trl-dpo")
    parser.add_argument("--worker", choices=["tuneforge", "trl"], default=None)
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "both"], default="both", help="precision(s)"
    )
    args = parser.parse_args()
    args.steps = args.steps or (5 if args.quick else 12)
    args.batch_size = args.batch_size or (4 if args.quick else 8)
    if args.worker:
        worker(args)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the machine line reports the runs' thread count
    load_before = os.getloadavg()
    rows, ratios = [], []
    dtypes = ("float32", "bfloat16") if args.dtype == "both" else (args.dtype,)
    for dtype in dtypes:
        results = {which: launch(args, which, dtype) for which in ("trl", "tuneforge")}
        trl, ours = results["trl"], results["tuneforge"]
        speed = ours["tokens_per_s"] / trl["tokens_per_s"] if trl["tokens_per_s"] else 0.0
        memory = ours["peak_rss_bytes"] / trl["peak_rss_bytes"]
        ratios.append((dtype, speed, memory))
        for which, res in (("TRL DPOTrainer + peft", trl), ("tuneforge", ours)):
            tail = res["losses"][-3:]
            rows.append(
                [
                    "bf16" if dtype == "bfloat16" else "fp32",
                    which,
                    f"{res['tokens_per_s']:.0f}",
                    f"{res['peak_rss_bytes'] / 2**30:.2f}",
                    f"{res['losses'][0]:.4f}",
                    f"{_mean(tail):.4f}",
                    f"{_mean(res['accuracies'][-3:]):.2f}",
                    f"{res['tokens_per_s'] / trl['tokens_per_s']:.2f}x",
                ]
            )
    load_after = os.getloadavg()
    body = (
        f"Default model (SmolLM2-135M-Instruct), JSON-orders preference pairs "
        f"(demo:preference), LoRA DPO r={LORA['r']} alpha={LORA['alpha']} on every linear layer "
        f"but the head, beta {BETA}, lr {LR} linear, batch {args.batch_size} pairs, max length "
        f"{args.max_length}, {args.steps} steps, {args.threads or 'default'} torch threads; "
        "reference = the base with the adapter disabled, every step, in both. Tokens/s = real "
        "tokens of both conversations of each pair (prompt + chosen, prompt + rejected) per "
        "second, steady state (steps 2..N): the same count for both, so the ratio is pairs/s. "
        "Peak RSS of each run's own process (model load included). Activation checkpointing off "
        "for both. Data order differs (each shuffles its own way): the first step's loss is "
        "ln 2 = 0.6931 for both (a fresh adapter is the reference), later losses and accuracies "
        "are on different pairs. Load average (1, 5, 15 min) before: "
        f"{', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)}.\n\n"
        + markdown_table(
            [
                "dtype",
                "trainer",
                "tokens/s",
                "peak RSS GiB",
                "loss step 1",
                "loss last 3",
                "accuracy last 3",
                "speed vs TRL",
            ],
            rows,
        )
        + "\n\n"
        + "\n".join(
            f"- {'bf16' if dtype == 'bfloat16' else 'fp32'}: tuneforge {speed:.2f}x TRL's "
            f"tokens/s at {memory:.2f}x its peak RSS"
            for dtype, speed, memory in ratios
        )
        + "\n- Where the speed comes from: the prompt is computed once per pair instead of twice "
        "(prefix sharing, for the policy's forward and backward and the reference's forward), "
        "and the output head runs only on the completions' positions."
    )
    report("vs_trl_dpo", "tuneforge vs TRL DPOTrainer + peft (LoRA DPO)", body)


if __name__ == "__main__":
    main()
