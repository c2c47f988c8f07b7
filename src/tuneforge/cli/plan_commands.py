"""``tuneforge plan``: predicted peak memory per device of a training run, from a config alone."""

from __future__ import annotations

import argparse

from tuneforge.cli.options import HelpFormatter

EPILOG = """examples:
  tuneforge plan --model llama-65b --method qlora --batch-size 1 --max-length 512 \\
      --gradient-checkpointing --gpu-memory 48GB
  tuneforge plan --model llama-7b --method full --batch-size 1 --max-length 512 --gpu-memory 80GB
  tuneforge plan --model llama-7b --method full --batch-size 1 --max-length 512 \\
      --gpus 8 --strategy fsdp --gpu-memory 80GB
  tuneforge plan --model default --method lora --batch-size 8 --max-length 1024
  tuneforge plan --model path/to/config.json --method lora --lora-r 8

shipped configs: llama-7b, llama-13b, llama-65b, llama-2-70b (no weights needed)
"""


def register(subparsers) -> None:
    plan = subparsers.add_parser(
        "plan",
        help="predict peak memory per device of a training run (no weights needed)",
        description="Predict the peak memory of one device during training, by component "
        "(weights, gradients, optimizer states, activations, quantization constants, LoRA "
        "parameters), and whether it fits.",
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    plan.add_argument(
        "--model",
        required=True,
        help="a shipped config name (llama-7b ...), a config.json path, or a model reference",
    )
    plan.add_argument("--method", required=True, choices=["full", "lora", "qlora"])
    plan.add_argument("--batch-size", type=int, required=True, help="rows per device per step")
    plan.add_argument("--max-length", type=int, required=True, help="tokens per row")
    plan.add_argument("--gpus", type=int, default=1, help="data-parallel devices")
    plan.add_argument(
        "--strategy",
        default=None,
        choices=["single", "ddp", "fsdp"],
        help="single for one device; default ddp when --gpus > 1",
    )
    plan.add_argument(
        "--gpu-memory", default="80GB", help="memory of one device (GB = GiB, as GPUs are sold)"
    )
    plan.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    plan.add_argument("--lora-r", type=int, default=16, help="LoRA rank")
    plan.add_argument(
        "--target-modules", default=None, help="comma-separated linears to adapt (default all)"
    )
    plan.add_argument(
        "--optimizer", default="adamw", choices=["adamw", "adamw8bit", "paged_adamw8bit"]
    )
    plan.add_argument("--gradient-checkpointing", action="store_true")
    plan.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    plan.add_argument(
        "--supervised-fraction",
        type=float,
        default=1.0,
        help="share of tokens that carry loss (the head runs only on them)",
    )
    plan.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from tuneforge.plan import estimate_memory, load_model_config, parse_memory

    config = load_model_config(args.model)
    strategy = args.strategy or ("ddp" if args.gpus > 1 else "single")
    targets = [t.strip() for t in args.target_modules.split(",")] if args.target_modules else None
    plan = estimate_memory(
        config,
        method=args.method,
        batch_size=args.batch_size,
        max_length=args.max_length,
        dtype=args.dtype,
        lora_r=args.lora_r,
        target_modules=targets,
        gradient_checkpointing=args.gradient_checkpointing,
        optimizer=args.optimizer,
        gpus=args.gpus,
        strategy=strategy,
        supervised_fraction=args.supervised_fraction,
        grad_accum=args.grad_accum,
    )
    print(plan.table(parse_memory(args.gpu_memory)))
    return 0
