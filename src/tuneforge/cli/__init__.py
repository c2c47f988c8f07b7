"""The ``tuneforge`` command. Thin: parse arguments, call the library, print.

Each command group lives in its own module exposing ``register(subparsers)``; commands import
heavy libraries (torch, transformers) inside their functions so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys

from tuneforge.errors import TuneforgeError

_COMMAND_MODULES = [
    "tuneforge.cli.model_commands",
    "tuneforge.cli.data_commands",
    "tuneforge.cli.train_commands",
    "tuneforge.cli.serve_commands",
    "tuneforge.cli.adapter_commands",
    "tuneforge.cli.rag_commands",
    "tuneforge.cli.plan_commands",
    "tuneforge.cli.eval_commands",
    "tuneforge.cli.ui_commands",
]

EPILOG = """examples:
  tuneforge generate --model default "What is the capital of France?"
  tuneforge chat --model default
  tuneforge models
"""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered command group."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="tuneforge",
        description="Adapt open LLMs to your task and knowledge: fine-tune (full, LoRA, QLoRA), "
        "retrieve (RAG), evaluate and serve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from tuneforge import __version__

    parser.add_argument("--version", action="version", version=f"tuneforge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


# Third-party warnings that tell a tuneforge user nothing they can act on.
_BENIGN_WARNINGS = [
    # peft reads transformers' deprecated ``is_gradient_checkpointing`` when wrapping a model.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
]


def _not_the_optional_kernel_notice(record) -> bool:
    # bitsandbytes tries an optional CPU kernel package first, logs that it is missing and
    # falls back to its own path, which tuneforge uses anyway.
    return "gemm_4bit_forward from kernels-community" not in record.getMessage()


def silence_benign_warnings() -> None:
    """Hide the third-party notices above (every other warning and log line still shows)."""
    import logging
    import warnings

    for category, message in _BENIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_the_optional_kernel_notice)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the process exit code.

    0 ok; 2 a user error (``TuneforgeError``, printed on one line); 128 + N when signal N
    stopped the command: 130 for Ctrl-C (SIGINT), and for ``train`` also 143 for SIGTERM, after
    the run wrote a checkpoint (``tuneforge.train.TrainingInterrupted``); 141 (128 + SIGPIPE, as
    a shell reports for ``yes | head``) when the reader of stdout went away, without a traceback.
    """
    silence_benign_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # Python flushes stdout once more at exit: let that write go to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except TuneforgeError as err:
        print(f"tuneforge: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ntuneforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
