"""``tuneforge ui``: the web UI (data, training, playground, comparison) on a loopback port.

It is the ``tuneforge serve`` app bound to 127.0.0.1 with the UI mounted (``tuneforge.ui``) and
its folders: the runs folder (where the UI starts runs, and from which the playground loads
adapters) and the RAG stores.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tuneforge.cli.options import HelpFormatter, add_model_options, parse_adapter_specs

HOST = "127.0.0.1"  # the UI reads local files and starts processes: loopback only
UPLOAD_LIMIT = 256 * 1024 * 1024  # bytes: data files are uploaded whole

EPILOG = """examples:
  tuneforge ui                                   # http://127.0.0.1:7860/ui
  tuneforge ui --runs runs --store stores/docs --store stores/faq
  tuneforge ui --model default --adapter json=runs/json/adapter --api-key secret

Runs started in the UI are ordinary run folders under --runs: `tuneforge train --config
RUNS/NAME/config.yaml --resume` continues one from a terminal. docs/ui.md tours the pages.
"""


def register(subparsers) -> None:
    """Add the ``ui`` command."""
    ui = subparsers.add_parser(
        "ui",
        help="web UI: data, training, playground (side by side), comparison",
        description="Open the web UI on 127.0.0.1. The playground answers with --model and the "
        "adapters of runs under --runs (and --adapter), with RAG from --store.",
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    ui.add_argument(
        "--runs", type=Path, default=Path("runs"), help="runs folder (created when missing)"
    )
    ui.add_argument(
        "--store",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="RAG store folder for the playground (repeatable; the first is active at start)",
    )
    add_model_options(ui)
    ui.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="load a LoRA adapter at start (repeatable); runs' adapters load when picked",
    )
    ui.add_argument("--port", type=int, default=7860, help="TCP port on 127.0.0.1")
    ui.add_argument(
        "--api-key",
        default=None,
        help="require this key for every page and API call (browsers ask for it once); when "
        "not given, $TUNEFORGE_API_KEY is used",
    )
    ui.set_defaults(func=run_ui)


def compare_parser() -> argparse.ArgumentParser:
    """The ``tuneforge compare`` argument parser, as the CLI builds it (the compare page's form
    is read from it)."""
    from tuneforge.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse keeps subcommands only in this private list
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["compare"]
    raise LookupError("the tuneforge parser has no compare command")


def run_ui(args: argparse.Namespace) -> int:
    """Load the model, build the server app with the UI, serve until Ctrl-C or SIGTERM; then
    stop the training runs the UI started (SIGTERM: each writes a checkpoint)."""
    import uvicorn

    from tuneforge.serve import ServeSettings, build_server
    from tuneforge.ui import UiSettings, mount_ui

    adapters = parse_adapter_specs(args.adapter)
    args.runs.mkdir(parents=True, exist_ok=True)
    settings = ServeSettings(
        model_name=args.model,
        api_key=args.api_key or os.environ.get("TUNEFORGE_API_KEY"),
        adapter_roots=[args.runs],
        host=HOST,
        max_body_bytes=UPLOAD_LIMIT,
    )
    ui = UiSettings(
        runs=args.runs, stores=args.store, model=args.model, compare_parser=compare_parser()
    )
    server = build_server(
        args.model,
        adapters,
        settings,
        store=args.store[0] if args.store else None,
        dtype=args.dtype,
        device=args.device,
    )
    app = server.app
    mount_ui(app, ui, server.retriever)
    print(f"tuneforge UI at http://{HOST}:{args.port}/ui (Ctrl-C or SIGTERM stops)")
    try:
        uvicorn.run(app, host=HOST, port=args.port, log_level="warning")
    finally:
        app.state.ui.jobs.stop_all()
    return 0
