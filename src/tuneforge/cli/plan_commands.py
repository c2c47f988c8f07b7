"""``tuneforge plan``: predicted peak memory per device of a training run, from a config alone.

The settings are a training config's: ``--config`` takes a training YAML (a run's config.yaml
too), and the options are the memory-relevant ``TrainConfig``/``DataConfig`` fields, generated
from the dataclasses with the same names, choices and defaults as ``tuneforge train``. The plan
is ``tuneforge.train.planning.plan_for_run``: what a run prints before it trains.
"""

from __future__ import annotations

import argparse

from tuneforge.cli.config_options import add_config_options, given_options
from tuneforge.cli.options import HelpFormatter

EPILOG = """examples:
  tuneforge plan --model llama-65b --method qlora --batch-size 1 --max-length 512 \\
      --gradient-checkpointing --gpu-memory 48GB
  tuneforge plan --model llama-7b --method full --batch-size 1 --max-length 512 --gpu-memory 80GB
  tuneforge plan --model llama-7b --method full --batch-size 1 --max-length 512 \\
      --gpus 8 --strategy fsdp --gpu-memory 80GB
  tuneforge plan --config examples/lora.yaml --device cpu
  tuneforge plan --config runs/r16/config.yaml --optimizer adamw_8bit --gpu-memory 24GB
  tuneforge plan --model path/to/config.json --method lora --lora-r 16
  tuneforge plan --model llama-7b --method full --objective dpo --reference copy \
      --batch-size 1 --max-length 512 --gpu-memory 80GB

--model also takes a shipped config name: llama-7b, llama-13b, llama-65b, llama-2-70b (no
weights needed), or a config.json path. --device auto (the default) plans a GPU; --dtype auto
is then bfloat16. Without --gpu-memory the table has no FITS verdict. --objective dpo/orpo plans
pair rows (a prompt once + two completions); a full fine-tuning DPO plan shows both references
(a frozen copy, or log-probs precomputed before training).
"""

# The TrainConfig and DataConfig fields that change a run's memory.
PLANNED_FIELDS = (
    "model",
    "method",
    "objective",
    "reference",
    "batch_size",
    "grad_accum",
    "packing",
    "lora_r",
    "lora_dropout",
    "target_modules",
    "dtype",
    "device",
    "strategy",
    "gradient_checkpointing",
    "optimizer",
)


def register(subparsers) -> None:
    """Add the ``plan`` command."""
    from tuneforge.data.config import DataConfig
    from tuneforge.train.config import TrainConfig

    plan = subparsers.add_parser(
        "plan",
        help="predict peak memory per device of a training run (no weights needed)",
        description="Predict the peak memory of one device during training, by component "
        "(weights, gradients, optimizer states, activations, quantization constants, LoRA "
        "parameters), and whether it fits. The plan 'tuneforge train' prints for the same "
        "settings.",
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    plan.add_argument(
        "--config", default=None, help="a training config YAML (examples/*.yaml, config.yaml)"
    )
    plan.add_argument(
        "--gpus", type=int, default=1, help="processes, one device each (torchrun's nproc)"
    )
    plan.add_argument(
        "--gpu-memory",
        default=None,
        help="memory of one device, e.g. 80GB (GB = GiB, as GPUs are sold): adds the verdict",
    )
    plan.add_argument(
        "--supervised-fraction",
        type=float,
        default=1.0,
        help="share of tokens that carry loss (the head runs only on them); a run measures it "
        "on its data and prints it in its plan",
    )
    group = plan.add_argument_group(
        "training options", "as in 'tuneforge train' (YAML keys with underscores)"
    )
    dests = add_config_options(group, TrainConfig, only=PLANNED_FIELDS)
    dests += add_config_options(group, DataConfig, only=("max_length",))
    plan.set_defaults(func=run_plan, config_dests=dests)


def run_plan(args: argparse.Namespace) -> int:
    """Build the training config, plan it, print the table."""
    from tuneforge.plan import parse_memory
    from tuneforge.train import load_config
    from tuneforge.train.planning import plan_for_run, planned_device_type

    config = load_config(args.config, given_options(args, args.config_dests))
    plan = plan_for_run(
        config,
        device_type=planned_device_type(config.device),
        world_size=args.gpus,
        supervised_fraction=args.supervised_fraction,
    )
    device_bytes = parse_memory(args.gpu_memory) if args.gpu_memory else None
    print(plan.table(device_bytes))
    return 0
