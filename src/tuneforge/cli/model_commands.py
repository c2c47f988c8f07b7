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
        '"Order 2 lamps"   # the base and each adapter side by side\n'
        '  tuneforge generate --json-schema order.schema.json "Order 2 lamps, ship to Oslo"\n'
        '  tuneforge generate --json "List three colours"   # any JSON object\n'
        "with --json-schema or --json the reply is JSON by construction (constrained decoding); "
        "one cut by --max-new-tokens before it closes is reported and exits with status 1",
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
    add_json_options(generate)
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


def add_json_options(parser: argparse.ArgumentParser) -> None:
    """--json-schema FILE and --json: constrained decoding of the reply (one or the other)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--json-schema",
        default=None,
        metavar="FILE",
        help="reply with JSON following this JSON schema (constrained decoding)",
    )
    group.add_argument(
        "--json", action="store_true", help="reply with a JSON object (constrained decoding)"
    )


def schema_from_options(args: argparse.Namespace) -> dict | None:
    """The schema ``--json-schema``/``--json`` ask replies to follow (None: free text),
    checked before any model loads."""
    from tuneforge.generation import ANY_JSON_OBJECT, read_json_schema, validate_json_schema

    if args.json_schema:
        schema = read_json_schema(args.json_schema)
        validate_json_schema(schema)
        return schema
    return dict(ANY_JSON_OBJECT) if args.json else None


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
    from tuneforge.generation import JsonSchemaCompiler, chat_messages, generate

    settings = settings_from_options(args)
    schema = schema_from_options(args)
    specs = args.adapter or []
    if len(specs) > 1 or any("=" in spec for spec in specs):
        return generate_side_by_side(args, parse_adapter_specs(specs), settings, schema)
    args.adapter = specs[0] if specs else None
    model, tokenizer, load_seconds = load_model_from_options(args)
    processor = None
    if schema is not None:
        processor = JsonSchemaCompiler.for_model(model, tokenizer).compile(schema).row_processor()
    reply = generate(
        model,
        tokenizer,
        chat_messages(args.prompt, args.system),
        settings,
        on_text=_write,
        logits_processor=processor,
    )
    _write("\n")
    if not args.quiet:
        rate = reply.completion_tokens / reply.seconds if reply.seconds > 0 else 0.0
        print(
            f"[load {load_seconds:.1f} s · {reply.prompt_tokens} prompt + {reply.completion_tokens} "
            f"new tokens · {rate:.1f} tokens/s]",
            file=sys.stderr,
        )
    return _truncated_json_status([reply], schema, settings.max_new_tokens)


def _truncated_json_status(replies, schema: dict | None, max_new_tokens: int) -> int:
    """Exit status 1 (with a note) when a constrained reply was cut before its JSON closed."""
    cut = schema is not None and any(reply.finish_reason == "length" for reply in replies)
    if cut:
        print(
            f"error: the JSON was cut at --max-new-tokens {max_new_tokens} before it closed "
            "(not valid JSON); raise --max-new-tokens",
            file=sys.stderr,
        )
    return 1 if cut else 0


def generate_side_by_side(
    args: argparse.Namespace, adapters: dict[str, Path], settings, schema: dict | None = None
) -> int:
    """``generate`` with several ``--adapter``: the base and each adapter, in one batch.

    With ``schema`` every row gets its own matcher of the same grammar.
    """
    from tuneforge.adapters import AdapterRegistry, load_base_for_adapters
    from tuneforge.generation import JsonSchemaCompiler, Row, chat_messages, prompt_ids

    loaded = load_base_for_adapters(
        args.model, adapters.values(), dtype=args.dtype, device=args.device
    )
    if not args.quiet:
        print(f"adapters {base_note(loaded)}", file=sys.stderr)
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    for name, folder in adapters.items():
        registry.load(name, folder)
    grammar = None
    if schema is not None:
        grammar = JsonSchemaCompiler.for_model(registry.model, registry.tokenizer).compile(schema)
    ids = prompt_ids(registry.tokenizer, chat_messages(args.prompt, args.system))
    names = [None, *adapters]
    rows = [
        Row(
            ids,
            settings,
            name,
            logits_processor=None if grammar is None else grammar.row_processor(),
        )
        for name in names
    ]
    registry.reserve(names)
    try:
        replies = registry.decode(rows)
    finally:
        registry.release(names)
    for name, reply in zip(names, replies, strict=True):
        print("── base ──" if name is None else f"── {name} ({adapters[name]}) ──")
        print(reply.text)
        if not args.quiet:
            print(
                f"[{reply.completion_tokens} new tokens · {reply.finish_reason}]", file=sys.stderr
            )
    return _truncated_json_status(replies, schema, settings.max_new_tokens)


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
