"""Options shared by several commands, declared once."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the example epilogs as written."""


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device."""
    parser.add_argument(
        "--model",
        default="default",
        help="model reference: 'default' (bundled SmolLM2-135M-Instruct), a model folder, "
        "a .gguf file, or a hub id",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights/compute dtype; auto = bf16 on a capable GPU, else fp32",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """--max-new-tokens, --temperature, --top-p, --seed, --system."""
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (deterministic)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
