"""``tuneforge train``: fine-tune a model (full, LoRA, QLoRA; SFT, DPO, ORPO) from a YAML config
plus overrides.

The options are generated from ``TrainConfig`` and its nested ``DataConfig`` and
``RaftSettings`` (``tuneforge.cli.config_options``): every config field is an option, with its
docstring as help.
"""

from __future__ import annotations

import argparse
import os
import sys

from tuneforge.cli.config_options import add_config_options, given_options
from tuneforge.cli.options import HelpFormatter

EPILOG = """examples:
  tuneforge train --config examples/lora.yaml
  tuneforge train --config examples/qlora.yaml --max-steps 50 --out runs/q1 --force
  tuneforge train --data orders.jsonl --method lora --lora-r 16 --packing --out runs/r16
  tuneforge train --data demo --format messages --max-length 256 --skip-invalid --out runs/d
  tuneforge train --config runs/r16/config.yaml --resume      # continue after a crash or Ctrl-C
  tuneforge train --config runs/r16/config.yaml --resume --max-steps 400   # train a finished run longer
  torchrun --nproc-per-node 2 -m tuneforge train --config examples/lora.yaml --strategy fsdp
  tuneforge train --store kb --data qa.jsonl --raft-oracle-share 0.8 --out runs/raft   # RAFT
  tuneforge train --config examples/dpo.yaml          # DPO from runs/lora/adapter (SFT first)
  tuneforge train --data demo:preference --objective dpo --method lora --beta 0.1 --out runs/p
  tuneforge train --data pairs.jsonl --objective orpo --method full --out runs/o

--data demo (or demo:train, demo:test) is the bundled json_orders task; demo:preference its
preference pairs ({"prompt", "chosen", "rejected"}) for --objective dpo or orpo.
With --store, --data is a question file ({"question", "answer" (null: not in the documents),
"source"}) and the run trains on the retrieval prompts 'rag ask' builds from that store (RAFT).
Ctrl-C (SIGINT) or SIGTERM stops after the current step with a checkpoint (exit 130 / 143);
runs also checkpoint at their end and every --save-every-minutes (default 10).
"""


# RaftSettings a user sets (the seed is the run's; shuffling is always on in training).
RAFT_OPTIONS = (
    "top_k",
    "oracle_share",
    "examples_per_question",
    "mode",
    "min_similarity",
    "prompt_format",
    "target_format",
    "client_system",
)


def register(subparsers) -> None:
    """Add the ``train`` command."""
    from tuneforge.data.config import DataConfig
    from tuneforge.rag.raft import RaftSettings
    from tuneforge.train.config import TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model: full, LoRA or QLoRA; SFT, DPO or ORPO",
        description="Fine-tune a model on a data file (--method: which weights train; "
        "--objective: sft, or dpo/orpo on preference pairs). Values come from --config (YAML), "
        "then the options given here win. The run directory gets config.yaml, metrics.jsonl, "
        "checkpoints/, adapter/ or model/, and summary.json.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--config", default=None, help="YAML file of training config fields")
    training = parser.add_argument_group(
        "training options", "TrainConfig fields; in YAML the same names with underscores"
    )
    dests = add_config_options(training, TrainConfig)
    data = parser.add_argument_group(
        "data options",
        "DataConfig fields (as in 'tuneforge data inspect'); in YAML under data: or at the top "
        "level. The validation split uses --seed.",
    )
    dests += add_config_options(data, DataConfig, skip=("seed",), rename={"path": "data"})
    raft = parser.add_argument_group(
        "RAFT options (with --store)", "RaftSettings fields; in YAML under raft: without 'raft_'"
    )
    raft_dests = add_config_options(
        raft, RaftSettings, only=RAFT_OPTIONS, rename={n: f"raft_{n}" for n in RAFT_OPTIONS}
    )
    parser.set_defaults(func=run_train, config_dests=dests, raft_dests=raft_dests)


def run_train(args: argparse.Namespace) -> int:
    """Load the config, apply the options, train, print where the results are.

    Returns:
        0, or 130 / 143 when SIGINT / SIGTERM stopped the run (after a checkpoint).
    """
    from tuneforge.tasks.json_orders import resolve_demo_data
    from tuneforge.train import TrainingInterrupted, load_config, train

    overrides = given_options(args, args.config_dests)
    overrides["raft"] = {
        dest.removeprefix("raft_"): value
        for dest, value in given_options(args, args.raft_dests).items()
    }
    config = load_config(args.config, overrides)
    config.data.path = resolve_demo_data(config.data.path)
    if config.val_data:
        config.val_data = resolve_demo_data(config.val_data)
    reports = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 reports
    try:
        result = train(config)
    except TrainingInterrupted as stopped:
        if reports:
            print(f"tuneforge: {stopped}", file=sys.stderr)
        return stopped.exit_code
    summary = result.summary
    if not reports:
        return 0
    print(
        f"done: {summary['steps']} steps ({summary['stop_reason']}), final loss "
        f"{summary['final_loss']:.4f}, {summary['tokens_per_s']:.0f} tokens/s; "
        f"{result.output_dir} and {result.run_dir / 'summary.json'} written"
    )
    return 0
