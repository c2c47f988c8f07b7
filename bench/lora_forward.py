"""The LoRA layer forward in training: peft's own against tuneforge's fused one, step by step.

peft adds the update as ``result + lora_B(lora_A(x)) * scaling``; ``tuneforge train`` gives each
plain LoRA linear layer a forward that does the add and the scaling inside one ``addmm``
(``train.methods.fuse_lora_updates``). This bench trains the default model with LoRA (r=8,
alpha=16, every linear layer but the head) on the JSON-orders task, batch 8, max length 256,
unpacked, and runs every batch twice in one process, once with each forward, alternating which
goes first, after an untimed run of the batch: the machine's drift (this shared machine's speed moves 2x within minutes) hits both
alike, and both see the same tokens. Forward + backward + clip + optimizer step are timed; the
optimizer steps only after the second run of a batch, so both see the same weights.

    .venv/bin/python bench/lora_forward.py                  # fp32 and bf16, 16 batches each
    .venv/bin/python bench/lora_forward.py --dtype float32 --batches 8

Writes bench/results/lora_forward.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import DEFAULT_HOME, markdown_table, report

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "tuneforge" / "assets" / "json_orders" / "train.jsonl"


def _peft_forwards(model, on: bool) -> None:
    """Fused forwards (``on`` False) or peft's own (``on`` True) on every LoRA linear layer."""
    from peft.tuners.lora.layer import Linear

    from tuneforge.train.methods import fuse_lora_updates

    if on:
        for module in model.modules():
            if type(module) is Linear and "forward" in module.__dict__:
                del module.forward
    else:
        fuse_lora_updates(model)


def measure(dtype: str, batches: int, batch_size: int, max_length: int) -> dict:
    """Seconds per arm over ``batches`` batches, each run by both arms in alternating order."""
    import torch

    from tuneforge.data import DataConfig, make_batches, prepare_data
    from tuneforge.models.bundled import ensure_default_model
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.loss import autocast_for, supervised_loss_sum
    from tuneforge.train.methods import prepare_model

    cpu = torch.device("cpu")
    folder = ensure_default_model(DEFAULT_HOME, progress=False)
    config = TrainConfig(model=str(folder), method="lora", dtype=dtype, progress=False)
    prepared = prepare_model(config, cpu)
    model = prepared.model
    data = prepare_data(DataConfig(path=str(DATA), max_length=max_length), prepared.tokenizer)
    pad = prepared.tokenizer.pad_token_id
    width = 64 if dtype == "bfloat16" else 1  # what ``tuneforge train`` pads to on CPU
    groups = make_batches(
        data.train,
        batch_size=batch_size,
        max_length=max_length,
        packing=False,
        pad_token_id=pad,
        width_multiple=width,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    seconds = {"peft": 0.0, "fused": 0.0}
    ratios, tokens = [], 0

    def step(batch) -> float:
        tick = time.perf_counter()
        with autocast_for(cpu, prepared.compute_dtype):
            loss = supervised_loss_sum(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        return time.perf_counter() - tick

    for index in range(batches + 1):
        batch = groups[index % len(groups)]
        order = ("peft", "fused") if index % 2 else ("fused", "peft")
        took = {}
        _peft_forwards(model, order[1] == "peft")
        optimizer.zero_grad(set_to_none=True)
        step(batch)  # untimed: this batch's width meets its kernels and allocations first here
        for arm in order:
            _peft_forwards(model, arm == "peft")
            optimizer.zero_grad(set_to_none=True)
            took[arm] = step(batch)
        optimizer.step()
        if index == 0:
            continue  # warm-up: first-touch allocations, kernel selection
        tokens += int(batch["attention_mask"].sum())
        for arm, value in took.items():
            seconds[arm] += value
        ratios.append(took["peft"] / took["fused"])
    return {"seconds": seconds, "tokens": tokens, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="both")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    rows = []
    for dtype in dtypes:
        result = measure(dtype, args.batches, args.batch_size, args.max_length)
        rates = {arm: result["tokens"] / s for arm, s in result["seconds"].items()}
        ratios = sorted(result["ratios"])
        rows.append(
            [
                "bf16" if dtype == "bfloat16" else "fp32",
                f"{rates['peft']:.0f}",
                f"{rates['fused']:.0f}",
                f"{rates['fused'] / rates['peft']:.2f}x",
                f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})",
            ]
        )
        print(rows[-1], flush=True)
    body = (
        f"Default model, LoRA r=8 alpha=16 on every linear layer but the head, JSON-orders task, "
        f"batch {args.batch_size}, max length {args.max_length}, unpacked; {args.batches} "
        "batches, each run untimed once, then by both forwards in one process in alternating "
        "order (forward + "
        "backward + gradient clipping; the optimizer steps after both). Real (non-pad) "
        "tokens/s over all batches; the per-batch ratio is peft's time over the fused time.\n\n"
        + markdown_table(
            [
                "dtype",
                "peft forward: tokens/s",
                "fused forward: tokens/s",
                "fused vs peft",
                "per batch: median (min-max)",
            ],
            rows,
        )
    )
    report("lora_forward", "LoRA layer forward in training: peft's vs fused addmm", body)


if __name__ == "__main__":
    main()
