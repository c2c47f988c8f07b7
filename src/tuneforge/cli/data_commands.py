"""``tuneforge data inspect`` and ``tuneforge data validate``: see what training will see."""

from __future__ import annotations

import argparse

from tuneforge.cli.config_options import add_config_options, given_options
from tuneforge.cli.options import HelpFormatter


def register(subparsers) -> None:
    data = subparsers.add_parser(
        "data",
        help="inspect or validate a training data file",
        formatter_class=HelpFormatter,
        epilog="examples:\n  tuneforge data inspect demo\n  tuneforge data validate train.jsonl",
    )
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: data.print_help() or 2)

    inspect = commands.add_parser(
        "inspect",
        help="counts, token lengths, loss share, packing efficiency and one marked example",
        formatter_class=HelpFormatter,
        epilog="examples:\n  tuneforge data inspect demo\n"
        "  tuneforge data inspect chats.jsonl --model default --max-length 512 --example 3\n"
        "  tuneforge data inspect demo:preference     # a preference pair, prompt and replies\n"
        "supervised tokens (those that carry loss) are shown between ⟦ and ⟧",
    )
    _add_data_options(inspect)
    inspect.add_argument("--example", type=int, default=0, help="which example to show")
    inspect.set_defaults(func=run_inspect)

    validate = commands.add_parser(
        "validate",
        help="check every record (shape, roles, UTF-8, JSON) and report file:line problems",
        formatter_class=HelpFormatter,
        epilog="examples:\n  tuneforge data validate train.jsonl\n"
        "  tuneforge data validate data/ --skip-invalid --model default",
    )
    _add_data_options(validate, model_default=None)
    validate.set_defaults(func=run_validate)


def _add_data_options(parser: argparse.ArgumentParser, model_default: str | None = "default"):
    """The file, --model, and one option per DataConfig field (generated from the dataclass)."""
    from tuneforge.data.config import DataConfig

    parser.add_argument(
        "file",
        help="a .jsonl/.json/.csv/.parquet file, a folder of them, 'demo' (the bundled "
        "json_orders task; demo:test for its test split) or a hub data set name",
    )
    parser.add_argument(
        "--model",
        default=model_default,
        help="model whose tokenizer and chat template to use"
        + ("" if model_default else " (validate: also tokenizes and checks lengths)"),
    )
    group = parser.add_argument_group("data options", "DataConfig fields, as training reads them")
    dests = add_config_options(group, DataConfig, skip=("path",))
    parser.set_defaults(config_dests=dests)


def _config(args: argparse.Namespace):
    from tuneforge.data import DataConfig
    from tuneforge.tasks.json_orders import resolve_demo_data

    return DataConfig(path=resolve_demo_data(args.file), **given_options(args, args.config_dests))


def _tokenizer(model: str):
    from tuneforge.models.loading import load_tokenizer, resolve_folder

    return load_tokenizer(resolve_folder(model))


def run_inspect(args: argparse.Namespace) -> int:
    from tuneforge.data.inspection import inspect_data

    config = _config(args)
    print(inspect_data(config, _tokenizer(args.model), example_index=args.example).text())
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from tuneforge.data.prepare import DataReport, load_examples, prepare_data

    config = _config(args)
    if args.model:
        report = prepare_data(config, _tokenizer(args.model), progress=True).report
        print(report.summary())
    else:
        report = DataReport(source=config.path)
        examples = load_examples(config, report)
        what = "pairs" if report.format == "preference" else "examples"
        print(
            f"{config.path}: {len(examples)} valid {what} (format {report.format}); "
            f"{report.rows_read} rows read, {report.invalid_skipped} invalid skipped, "
            f"{report.duplicates_removed} duplicates removed"
        )
        for sample in report.invalid_samples[:10]:
            print(f"  skipped: {sample}")
    return 0
