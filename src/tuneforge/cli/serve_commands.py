"""``tuneforge serve``: an OpenAI-compatible HTTP server for a model and its LoRA adapters."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tuneforge.cli.options import HelpFormatter, add_model_options, parse_adapter_specs
from tuneforge.errors import ConfigError

EPILOG = """examples:
  tuneforge serve --model default
  tuneforge serve --model default --adapter json=runs/json/adapter --api-key secret
  tuneforge serve --model default --store stores/docs --port 8001
  tuneforge serve --model default --adapter-root runs --api-key secret   # hot loading from runs/

then, from Python (pip install openai):
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret")
  client.chat.completions.create(model="json", messages=[{"role": "user", "content": "Hi"}])

hot swap (needs --adapter-root runs):
  curl -H 'Authorization: Bearer secret' -d '{"lora_name": "b", "lora_path": "runs/b/adapter"}' \\
       -H 'Content-Type: application/json' http://127.0.0.1:8000/v1/load_lora_adapter

security: docs/serve.md#security says what is reachable over HTTP.
"""


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve a model and adapters over an OpenAI-compatible HTTP API",
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    add_model_options(serve)
    serve.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="load a LoRA adapter folder at start under NAME (repeatable); requests use it with "
        '"model": NAME. A bare DIR is named after its run folder (runs/json/adapter: json)',
    )
    serve.add_argument(
        "--adapter-root",
        action="append",
        default=[],
        metavar="DIR",
        help="folder inside which POST /v1/load_lora_adapter may load adapters (repeatable). "
        "Without it, loading adapters over HTTP is off; /, your home folder and the folders "
        "above it are refused",
    )
    serve.add_argument("--store", type=Path, default=None, help="RAG store folder (enables 'rag')")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind; loopback unless you mean it"
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port")
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name clients may send in the Host header (repeatable; '*' allows any). "
        "By default only the names the --host address implies are answered (localhost, "
        "127.0.0.1, [::1] on loopback), against DNS rebinding",
    )
    serve.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on every endpoint but /health (visible ASCII "
        "only); when not given, $TUNEFORGE_API_KEY is used (it keeps the key out of the "
        "process list)",
    )
    serve.add_argument(
        "--served-model-name",
        default=None,
        help="the id clients use for the base model (default: the --model reference)",
    )
    serve.add_argument(
        "--max-batch-size", type=int, default=8, help="most requests decoded together"
    )
    serve.add_argument(
        "--max-queue", type=int, default=64, help="most waiting requests; more get HTTP 429"
    )
    serve.add_argument(
        "--max-tokens", type=int, default=256, help="reply length when a request sets none"
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=4 * 1024 * 1024,  # ServeSettings.max_body_bytes (a test keeps them equal)
        help="largest request body in bytes; a larger one is answered 413",
    )
    serve.add_argument(
        "--compile",
        action="store_true",
        help="compile single-request decode steps (torch.compile) while starting: up to about "
        "1.15x faster one-at-a-time decoding on CPU, none in a slower hour (docs/decode.md), "
        "for a start-up of about a minute the first time (seconds once inductor's cache holds "
        "it); batches and adapter rows stay eager",
    )
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneforge.cli.ui_commands import compare_parser
    from tuneforge.serve import ServeSettings, build_server
    from tuneforge.serve.guards import is_loopback
    from tuneforge.ui import mount_ui, ui_settings_for_server

    adapters = parse_adapter_specs(args.adapter)
    settings = ServeSettings(
        model_name=args.served_model_name or args.model,
        api_key=args.api_key or os.environ.get("TUNEFORGE_API_KEY"),
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        adapter_roots=[Path(root) for root in args.adapter_root],
        default_max_tokens=args.max_tokens,
        store=args.store,
        host=args.host,
        allowed_hosts=args.allowed_host,
        max_body_bytes=args.max_body_bytes,
    )
    if settings.model_name in adapters:
        raise ConfigError(f"--adapter {settings.model_name}: the base model already has this name")
    # One base for every adapter, loaded as they were trained (NF4 4-bit for QLoRA adapters).
    server = build_server(
        args.model,
        adapters,
        settings,
        store=args.store,
        dtype=args.dtype,
        device=args.device,
        compile_steps=args.compile,
    )
    print(
        f"base: {server.precision}"
        + (", as its QLoRA adapters were trained" if server.quantized else "")
    )
    if server.compiled:
        print(server.compiled)
    app = server.app
    ui = ui_settings_for_server(settings, args.model, compare_parser())
    with_ui = mount_ui(app, ui, server.retriever)
    roots = ", ".join(str(root) for root in settings.adapter_roots)
    if not is_loopback(args.host) and settings.api_key is None:
        print(
            f"tuneforge: warning: listening on {args.host} without --api-key: anyone who can reach "
            "this address can use the model"
            + (f" and load adapters from {roots}" if roots else ""),
            file=sys.stderr,
        )
    names = ", ".join([settings.model_name, *adapters])
    print(f"serving {names} at http://{args.host}:{args.port}/v1 (Ctrl-C or SIGTERM stops)")
    if with_ui:
        print(f"web UI at http://{args.host}:{args.port}/ui")
    print(
        "adapter loading over HTTP: "
        + (f"from {roots}" if roots else "off (start with --adapter-root DIR to turn it on)")
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        if with_ui:
            app.state.ui.jobs.stop_all()  # training runs started from the UI checkpoint and stop
    return 0
