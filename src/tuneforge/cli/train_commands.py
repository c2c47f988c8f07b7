"""``tuneforge train``: fine-tune a model (full, LoRA, QLoRA) from a YAML config plus overrides."""

from __future__ import annotations

import argparse
import os

from tuneforge.cli.options import HelpFormatter

EPILOG = """examples:
  tuneforge train --config examples/lora.yaml
  tuneforge train --config examples/qlora.yaml --max-steps 50 --out runs/q1 --force
  tuneforge train --data orders.jsonl --method lora --lora-r 16 --packing --out runs/r16
  tuneforge train --config runs/r16/config.yaml --resume      # continue after a crash
  torchrun --nproc-per-node 2 -m tuneforge train --config examples/lora.yaml --strategy fsdp
"""

# (flag, config field, type, help); every one defaults to None so the YAML value stays unless
# the option is given.
_VALUE_OPTIONS = [
    ("--model", "model", str, "model reference: default, a folder, a .gguf file or a hub id"),
    ("--data", "data", str, "training data file (JSONL/JSON/CSV/Parquet)"),
    ("--val-data", "val_data", str, "validation data file"),
    ("--val-fraction", "val_fraction", float, "share of --data held out when no --val-data"),
    ("--out", "out", str, "run directory"),
    ("--epochs", "epochs", int, "passes over the data"),
    ("--max-steps", "max_steps", int, "optimizer steps (overrides --epochs)"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--batch-size", "batch_size", int, "examples (or packed rows) per micro-batch"),
    ("--grad-accum", "grad_accum", int, "micro-batches per optimizer step"),
    ("--max-length", "max_length", int, "longest sequence in tokens"),
    ("--lora-r", "lora_r", int, "LoRA rank"),
    ("--lora-alpha", "lora_alpha", float, "LoRA alpha (scaling = alpha / r)"),
    ("--lora-dropout", "lora_dropout", float, "dropout on the LoRA input"),
    (
        "--target-modules",
        "target_modules",
        str,
        "comma-separated names; default every linear layer but the output head",
    ),
    ("--optimizer", "optimizer", str, "adamw, adamw_8bit or paged_adamw_8bit"),
    ("--schedule", "schedule", str, "cosine, linear or constant (after warmup)"),
    ("--warmup-ratio", "warmup_ratio", float, "share of steps warming up"),
    ("--device", "device", str, "auto, cpu or cuda[:N]"),
    (
        "--strategy",
        "strategy",
        str,
        "under torchrun: ddp or fsdp (auto = ddp when launched on several processes)",
    ),
    ("--seed", "seed", int, "seed of init, data order and dropout"),
    ("--eval-every", "eval_every", int, "validate every N steps (0 = each epoch end)"),
    ("--save-every", "save_every", int, "checkpoint every N steps (0 = only at the end)"),
    ("--early-stopping-patience", "early_stopping_patience", int, "stop after N evals w/o gain"),
    ("--num-threads", "num_threads", int, "torch CPU threads"),
]
_FLAG_OPTIONS = [
    ("--packing", "packing", "pack several examples per row (block-diagonal attention)"),
    ("--use-rslora", "use_rslora", "rank-stabilised LoRA scaling alpha/sqrt(r)"),
    ("--use-dora", "use_dora", "weight-decomposed LoRA (DoRA)"),
    ("--gradient-checkpointing", "gradient_checkpointing", "recompute activations in backward"),
    ("--compile", "compile", "torch.compile each transformer block (faster steps after warm-up)"),
    ("--train-on-inputs", "train_on_inputs", "also put loss on system/user tokens"),
]


def register(subparsers) -> None:
    """Add the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model: full, LoRA or QLoRA",
        description="Fine-tune a model on a data file. Values come from --config (YAML), then "
        "the options given here win. The run directory gets config.yaml, metrics.jsonl, "
        "checkpoints/, adapter/ or model/, and summary.json.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--config", default=None, help="YAML file of training config fields")
    parser.add_argument(
        "--method", choices=["full", "lora", "qlora"], default=None, help="what to train"
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default=None,
        help="compute dtype; bfloat16 = autocast over fp32 trainable weights",
    )
    for flag, dest, kind, text in _VALUE_OPTIONS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    for flag, dest, text in _FLAG_OPTIONS:
        parser.add_argument(
            flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text
        )
    parser.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from the newest checkpoint in --out",
    )
    parser.add_argument(
        "--force", action="store_true", default=None, help="overwrite a non-empty run directory"
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="hide the progress bar",
    )
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Load the config, apply the options, train, print where the results are."""
    from tuneforge.train import load_config, train

    fields = ["method", "dtype", "resume", "force", "progress"]
    fields += [dest for _, dest, _, _ in _VALUE_OPTIONS] + [dest for _, dest, _ in _FLAG_OPTIONS]
    overrides = {name: getattr(args, name) for name in fields}
    config = load_config(args.config, overrides)
    result = train(config)
    summary = result.summary
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    print(
        f"done: {summary['steps']} steps ({summary['stop_reason']}), final loss "
        f"{summary['final_loss']:.4f}, {summary['tokens_per_s']:.0f} tokens/s; "
        f"{result.output_dir} and {result.run_dir / 'summary.json'} written"
    )
    return 0
