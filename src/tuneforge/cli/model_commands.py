"""``tuneforge models``, ``generate`` and ``chat``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuneforge.cli.options import (
    HelpFormatter,
    add_model_options,
    add_sampling_options,
    base_note,
    load_model_from_options,
    parse_adapter_specs,
    settings_from_options,
)


def register(subparsers) -> None:
    models = subparsers.add_parser(
        "models",
        help="list bundled and cached models",
        formatter_class=HelpFormatter,
        epilog="example:\n  tuneforge models",
    )
    models.set_defaults(func=run_models)

    generate = subparsers.add_parser(
        "generate",
        help="generate a reply to one prompt",
        formatter_class=HelpFormatter,
        epilog='example:\n  tuneforge generate --model default "What is the capital of France?"\n'
        '  tuneforge generate --adapter runs/json/adapter "Order 2 lamps, ship to Oslo"\n'
        "  tuneforge generate --adapter json=runs/json/adapter --adapter terse=runs/terse/adapter "
        '"Order 2 lamps"   # the base and each adapter side by side',
    )
    add_model_options(generate)
    generate.add_argument(
        "--adapter",
        action="append",
        default=None,
        help="a LoRA adapter folder (PEFT format); repeat as NAME=DIR to compare several "
        "adapters and the base side by side",
    )
    add_sampling_options(generate)
    generate.add_argument("--quiet", action="store_true", help="print only the reply, no timing")
    generate.add_argument("prompt", help="the user message")
    generate.set_defaults(func=run_generate)

    chat = subparsers.add_parser(
        "chat",
        help="interactive multi-turn chat",
        formatter_class=HelpFormatter,
        epilog="example:\n  tuneforge chat --model default\n"
        "commands inside the chat: /reset clears the history, /exit (or Ctrl-D) quits",
    )
    add_model_options(chat)
    chat.add_argument("--adapter", default=None, help="a LoRA adapter folder (PEFT format)")
    add_sampling_options(chat)
    chat.set_defaults(func=run_chat)


def run_models(args: argparse.Namespace) -> int:
    from tuneforge.models import list_models

    rows = list_models()
    width = max(len(row["ref"]) for row in rows)
    for row in rows:
        print(f"{row['ref']:<{width}}  {row['name']}  [{row['state']}]  {row['path']}")
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_generate(args: argparse.Namespace) -> int:
    from tuneforge.generation import chat_messages, generate

    settings = settings_from_options(args)
    specs = args.adapter or []
    if len(specs) > 1 or any("=" in spec for spec in specs):
        return generate_side_by_side(args, parse_adapter_specs(specs), settings)
    args.adapter = specs[0] if specs else None
    model, tokenizer, load_seconds = load_model_from_options(args)
    reply = generate(
        model, tokenizer, chat_messages(args.prompt, args.system), settings, on_text=_write
    )
    _write("\n")
    if not args.quiet:
        rate = reply.completion_tokens / reply.seconds if reply.seconds > 0 else 0.0
        print(
            f"[load {load_seconds:.1f} s · {reply.prompt_tokens} prompt + {reply.completion_tokens} "
            f"new tokens · {rate:.1f} tokens/s]",
            file=sys.stderr,
        )
    return 0


def generate_side_by_side(args: argparse.Namespace, adapters: dict[str, Path], settings) -> int:
    """``generate`` with several ``--adapter``: the base and each adapter, in one batch."""
    from tuneforge.adapters import AdapterRegistry, load_base_for_adapters
    from tuneforge.generation import chat_messages

    loaded = load_base_for_adapters(
        args.model, adapters.values(), dtype=args.dtype, device=args.device
    )
    if not args.quiet:
        print(f"adapters {base_note(loaded)}", file=sys.stderr)
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    for name, folder in adapters.items():
        registry.load(name, folder)
    messages = chat_messages(args.prompt, args.system)
    rows = [(messages, None)] + [(messages, name) for name in adapters]
    replies = registry.generate_batch(rows, settings)
    for (_, name), reply in zip(rows, replies, strict=True):
        print("── base ──" if name is None else f"── {name} ({adapters[name]}) ──")
        print(reply.text)
        if not args.quiet:
            print(
                f"[{reply.completion_tokens} new tokens · {reply.finish_reason}]", file=sys.stderr
            )
    return 0


def run_chat(args: argparse.Namespace) -> int:
    from tuneforge.generation import chat_messages, generate

    settings = settings_from_options(args)
    model, tokenizer, _ = load_model_from_options(args)
    history: list[dict] = []
    print("tuneforge chat: /reset clears the history, /exit or Ctrl-D quits", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            history.clear()
            print("(history cleared)", file=sys.stderr)
            continue
        messages = chat_messages(line, args.system, history)
        _write("assistant> ")
        reply = generate(model, tokenizer, messages, settings, on_text=_write)
        _write("\n")
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": reply.text}]
