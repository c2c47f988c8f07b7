"""tuneforge vs TRL's SFTTrainer + peft: real tokens/s, peak RSS and loss, side by side.

Same model (the bundled default), data (the JSON-orders demo task), batch size, max length,
LoRA config (r=8, alpha=16, every linear layer but the head), precision and steps; loss on the
assistant answer only; fp32, then bf16 (each trainer's own bf16 recipe: TRL loads the base in bf16
and sets ``bf16=True``, autocast over fp32 adapters; tuneforge ``dtype: bfloat16``); packing off
for both, then on for both. Each run is its own
subprocess so peak RSS is clean; the runs alternate so machine load hits both alike.

Tokens/s counts real (non-pad) tokens, steady state: steps 2..N over the time between the end of
step 1 and the end of step N. The same run measures this machine's torch.matmul peak (fp32 and
bf16) and reports tuneforge's useful training FLOP/s as a fraction of it.

    .venv/bin/python bench/vs_trl.py            # 20 steps, batch 8, max length 256
    .venv/bin/python bench/vs_trl.py --quick    # 6 steps, batch 4, max length 128
    .venv/bin/python bench/vs_trl.py --compile  # + tuneforge --compile rows
    .venv/bin/python bench/vs_trl.py --repeats 3  # 3 alternating pairs per row, median ratio
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, peak_rss_bytes, report

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "tuneforge" / "assets" / "json_orders" / "train.jsonl"
HOME = Path.home() / ".cache" / "tuneforge-test-default"
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
LR = 2e-4


def model_dir() -> Path:
    """The converted default model folder (converted on first use)."""
    from tuneforge.models.bundled import ensure_default_model

    return ensure_default_model(HOME, progress=False)


def steady_rate(tokens: list[int], ends: list[float]) -> float:
    """Real tokens/s over steps 2..N: tokens of those steps / (end of step N - end of step 1)."""
    if len(ends) < 2:
        return tokens[0] / ends[0] if ends and ends[0] > 0 else 0.0
    return sum(tokens[1:]) / (ends[-1] - ends[0])


def tuneforge_fields(args, data: Path, out: Path, lr: float, **extra) -> dict:
    """The ``tuneforge train`` config both benches run: LoRA on the default model with the
    bench's steps, batch, length and dtype, linear schedule without warm-up; ``extra`` adds
    the run's own fields."""
    return dict(
        model=str(model_dir()),
        data=str(data),
        method="lora",
        out=str(out),
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lr=lr,
        warmup_ratio=0.0,
        schedule="linear",
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        dtype=args.dtype,
        max_grad_norm=1.0,
        progress=False,
        **extra,
    )


def trl_setup(args, lr: float) -> SimpleNamespace:
    """What both TRL runs share: the tokenizer, the base in the run's dtype, the LoRA config,
    the trainer arguments every TRL config takes (``common``), and a step timer (``timer``, a
    callback appending each step's end to ``ends``, in seconds since step 1 began)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    folder = model_dir()
    ends: list[float] = []
    start = [0.0]

    class Timer(TrainerCallback):
        def on_step_begin(self, *_args, **_kwargs):
            if not start[0]:
                start[0] = time.perf_counter()

        def on_step_end(self, *_args, **_kwargs):
            ends.append(time.perf_counter() - start[0])

    common = dict(
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=args.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=args.dtype == "bfloat16",
        fp16=False,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        max_grad_norm=1.0,
        # TRL's configs turn activation checkpointing on by default; tuneforge's default is off.
        # Same recipe for both: off.
        gradient_checkpointing=False,
    )
    return SimpleNamespace(
        tokenizer=AutoTokenizer.from_pretrained(folder),
        model=AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, args.dtype), attn_implementation="sdpa"
        ),
        peft_config=LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
        common=common,
        timer=Timer(),
        ends=ends,
    )


def train_trl(setup, trainer_class, config, dataset, count) -> tuple[object, list[int]]:
    """Build ``trainer_class`` from ``setup`` (``trl_setup``) and train it, counting each
    collated batch's real tokens with ``count(batch)``; return the trainer and the counts of
    the timed steps."""
    trainer = trainer_class(
        model=setup.model,
        args=config,
        train_dataset=dataset,
        processing_class=setup.tokenizer,
        peft_config=setup.peft_config,
        callbacks=[setup.timer],
    )
    collate = trainer.data_collator
    tokens: list[int] = []

    def counting_collator(features):
        batch = collate(features)
        tokens.append(count(batch))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    return trainer, tokens[: len(setup.ends)]


def run_tuneforge(args) -> dict:
    """One tuneforge run through ``tuneforge.train.train``; read back its metrics."""
    import shutil

    from tuneforge.train import config_from_dict, train
    from tuneforge.train.metrics import read_metrics

    out = Path(args.workdir) / f"{args.worker}-{args.packing}"
    shutil.rmtree(out, ignore_errors=True)
    config = config_from_dict(
        tuneforge_fields(
            args,
            DATA,
            out,
            LR,
            packing=bool(args.packing),
            compile=args.worker == "tuneforge-compile",
        )
    )
    lines: list[str] = []
    train(config, log=lines.append)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    share = re.search(r"carrying loss: \d+ \(([\d.]+)%\)", "\n".join(lines))
    return {
        "supervised_share": float(share.group(1)) / 100 if share else 0.25,
        "tokens": [r["tokens"] for r in rows],
        "ends": [r["elapsed_s"] for r in rows],
        "losses": [r["loss"] for r in rows],
    }


def _trl_dataset():
    """The demo task as conversational prompt/completion records (loss on the completion)."""
    from datasets import Dataset

    records = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        records.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return Dataset.from_list(records)


def run_trl(args) -> dict:
    """One TRL SFTTrainer + peft run with a callback timing each step and a counting collator."""
    from trl import SFTConfig, SFTTrainer

    setup = trl_setup(args, LR)
    config = SFTConfig(
        output_dir=str(Path(args.workdir) / f"trl-{args.packing}"),
        packing=bool(args.packing),
        **setup.common,
    )
    trainer, tokens = train_trl(setup, SFTTrainer, config, _trl_dataset(), _real_tokens)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {"tokens": tokens, "ends": setup.ends, "losses": losses}


def _real_tokens(batch) -> int:
    """Real tokens of an SFT batch: its attention mask's sum; every position of a padding-free
    packed batch (which has no mask)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def matmul_peak() -> dict[str, float]:
    """This machine's torch.matmul throughput (FLOP/s) for fp32 and bf16, 1024^3 products."""
    import torch

    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(1024, 1024, dtype=dtype)
        b = torch.randn(1024, 1024, dtype=dtype)
        for _ in range(3):
            torch.matmul(a, b)
        best = float("inf")
        for _ in range(5):
            tick = time.perf_counter()
            for _ in range(5):
                torch.matmul(a, b)
            best = min(best, (time.perf_counter() - tick) / 5)
        peaks[str(dtype).removeprefix("torch.")] = 2 * 1024**3 / best
    return peaks


def useful_flops_per_token(supervised_share: float) -> float:
    """LoRA training FLOPs per real token on the default model (frozen base).

    Forward 2*N and input-gradient backward 2*N for the N decoder linear weights (the frozen base
    needs no weight gradients; LoRA's own FLOPs are < 2% at r=8), plus the tied head
    (2*V*H forward + 2*V*H backward) on supervised positions only. Attention scores are left out.
    """
    layers, hidden, inter, kv, vocab = 30, 576, 1536, 192, 49152
    per_layer = hidden * hidden * 2 + hidden * kv * 2 + 3 * hidden * inter
    return 4 * layers * per_layer + 4 * vocab * hidden * supervised_share


def worker(args) -> None:
    """Run one configuration and print one JSON line with its measurements."""
    import torch

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_tuneforge(args) if args.worker.startswith("tuneforge") else run_trl(args)
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["tokens_per_s"] = steady_rate(result["tokens"], result["ends"])
    print("RESULT " + json.dumps(result))


def _median_run(runs: list[dict]) -> dict:
    """The run of median tokens/s (the lower middle one for an even count), with the highest
    peak RSS of them all."""
    ordered = sorted(runs, key=lambda run: run["tokens_per_s"])
    middle = dict(ordered[(len(ordered) - 1) // 2])
    middle["peak_rss_bytes"] = max(run["peak_rss_bytes"] for run in runs)
    return middle


def launch(args, which: str, packing: int, dtype: str) -> dict:
    """Run a worker subprocess and parse its result line."""
    command = [
        sys.executable, __file__, "--worker", which, "--packing", str(packing), "--dtype", dtype,
        "--steps", str(args.steps), "--batch-size", str(args.batch_size),
        "--max-length", str(args.max_length), "--workdir", args.workdir,
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{which} {dtype} packing={packing} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 steps, batch 4, max length 128")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    parser.add_argument("--workdir", default="/tmp/tuneforge-bench-vs-trl")
    parser.add_argument("--worker", choices=["tuneforge", "tuneforge-compile", "trl"], default=None)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also run tuneforge --compile (TRL has no counterpart row)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each trainer per row, in alternating order; speed is the median pair ratio",
    )
    parser.add_argument("--packing", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "both"], default="both", help="precision(s)"
    )
    args = parser.parse_args()
    args.steps = args.steps or (6 if args.quick else 20)
    args.batch_size = args.batch_size or (4 if args.quick else 8)
    args.max_length = args.max_length or (128 if args.quick else 256)
    if args.worker:
        worker(args)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the peak is measured with the runs' thread count
    peaks = matmul_peak()
    rows, notes = [], []
    dtypes = ("float32", "bfloat16") if args.dtype == "both" else (args.dtype,)
    combos = [(dtype, packing) for dtype in dtypes for packing in (0, 1)]
    for dtype, packing in combos:
        runs = ["trl", "tuneforge"]
        if args.compile:
            runs.append("tuneforge-compile")
        repeats: dict[str, list[dict]] = {which: [] for which in runs}
        for repeat in range(args.repeats):  # pairs in alternating order: drift hits both alike
            for which in runs if repeat % 2 == 0 else runs[::-1]:
                repeats[which].append(launch(args, which, packing, dtype))
        trl_rates = [res["tokens_per_s"] for res in repeats["trl"]]
        results = {which: _median_run(found) for which, found in repeats.items()}
        names = {
            "trl": "TRL SFTTrainer + peft",
            "tuneforge": "tuneforge",
            "tuneforge-compile": "tuneforge --compile",
        }
        for which, res in results.items():
            name = names[which]
            rate = res["tokens_per_s"]
            pairs = sorted(
                run["tokens_per_s"] / base
                for run, base in zip(repeats[which], trl_rates, strict=True)
                if base
            )
            speedup = statistics.median(pairs) if pairs else 0.0
            spread = f" ({pairs[0]:.2f}-{pairs[-1]:.2f})" if len(pairs) > 1 else ""
            tail = res["losses"][-3:]
            rows.append(
                [
                    "bf16" if dtype == "bfloat16" else "fp32",
                    "on" if packing else "off",
                    name,
                    f"{res['tokens_per_s']:.0f}",
                    f"{res['peak_rss_bytes'] / 2**30:.2f}",
                    f"{res['losses'][0]:.3f}",
                    f"{sum(tail) / len(tail):.3f}",
                    f"{speedup:.2f}x{spread}",
                ]
            )
            if which == "trl":
                continue
            flops = rate * useful_flops_per_token(res["supervised_share"])
            short = "bf16" if dtype == "bfloat16" else "fp32"
            notes.append(
                f"{short}, packing {'on' if packing else 'off'}, {name}: useful training FLOP/s "
                f"{flops / 1e9:.1f} GFLOP/s = {100 * flops / peaks[dtype]:.1f}% of the measured "
                f"{short} matmul peak, {100 * flops / peaks['bfloat16']:.1f}% of the bf16 peak"
            )
    body = (
        f"Default model (SmolLM2-135M-Instruct), JSON-orders task, LoRA r={LORA['r']} "
        f"alpha={LORA['alpha']} on every linear layer but the head, batch "
        f"{args.batch_size}, max length {args.max_length}, {args.steps} steps, "
        f"{args.threads or 'default'} torch threads, {args.repeats} run(s) of each trainer per "
        "row in alternating order (tokens/s: the median run; speed vs TRL: the median of the "
        "pairs' ratios, with their range), loss on the "
        "answer only. Tokens/s = real (non-pad) tokens, steady state (steps 2..N; a "
        "--compile row compiles during step 1, outside it); peak RSS of "
        "each run's own process (model load included). Activation checkpointing off for both (TRL's default is on). Data order differs between the two "
        "(each shuffles its own way), so losses are compared as first step and mean of the last "
        "3.\n\n"
        + markdown_table(
            [
                "dtype",
                "packing",
                "trainer",
                "tokens/s",
                "peak RSS GiB",
                "loss step 1",
                "loss last 3",
                "speed vs TRL",
            ],
            rows,
        )
        + "\n\n"
        + f"torch.matmul peak (1024^3): fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, bf16 "
        f"{peaks['bfloat16'] / 1e9:.1f} GFLOP/s.\n"
        + "\n".join(f"- {note}" for note in notes)
        + "\n- useful FLOPs/token = 4 x decoder linear params + 4 x vocab x hidden x supervised "
        "share of the data (frozen base: forward + input gradient)."
    )
    report("vs_trl", "tuneforge vs TRL SFTTrainer + peft (LoRA)", body)


if __name__ == "__main__":
    main()
