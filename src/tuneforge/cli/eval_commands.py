"""``tuneforge eval`` (metrics on a data file) and ``tuneforge compare`` (arms × tasks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tuneforge.cli.options import HelpFormatter, add_model_options, load_model_from_options

METRIC_CHOICES = (
    "perplexity",
    "exact_match",
    "contains_answer",
    "json",
    "citation",
    "refusal",
    "latency",
)


def register(subparsers) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="score a model (optionally with an adapter and a RAG store) on a data file",
        formatter_class=HelpFormatter,
        epilog="examples:\n"
        "  tuneforge eval --model default --data held_out.jsonl --metric perplexity\n"
        "  tuneforge eval --adapter runs/json/adapter --data test.jsonl --metric json latency "
        "--schema orders.schema.json\n"
        "  tuneforge eval --store stores/kb --data kb_questions.jsonl "
        "--metric contains_answer citation refusal latency --out eval.json\n"
        'data: JSONL, one item a line: {"text"} for perplexity; {"question", "answer", '
        '"source"} for QA ("answer": null = unanswerable); {"messages"} or {"prompt", '
        '"expected"} for JSON output',
    )
    add_model_options(evaluate)
    evaluate.add_argument("--adapter", default=None, help="a LoRA adapter folder (PEFT format)")
    evaluate.add_argument("--store", default=None, help="a RAG store folder: answer with retrieval")
    evaluate.add_argument("--data", required=True, help="JSONL evaluation file")
    evaluate.add_argument(
        "--metric",
        nargs="+",
        default=["contains_answer", "latency"],
        choices=METRIC_CHOICES,
        help="metrics to compute",
    )
    evaluate.add_argument("--schema", default=None, help="JSON schema file for the json metric")
    evaluate.add_argument("--limit", type=int, default=None, help="score only the first N items")
    evaluate.add_argument("--max-new-tokens", type=int, default=128, help="most tokens per reply")
    evaluate.add_argument("--out", default=None, help="write the results (metrics + rows) as JSON")
    evaluate.set_defaults(func=run_eval)

    compare = subparsers.add_parser(
        "compare",
        help="base vs base+RAG vs fine-tuned vs fine-tuned+RAG on the bundled tasks, with a report",
        formatter_class=HelpFormatter,
        epilog="examples:\n"
        "  tuneforge compare --out runs/compare                 # quick: 13.5 min measured on 2 busy CPU cores\n"
        "  tuneforge compare --out runs/compare --budget full   # firmer numbers (~10x the work)\n"
        "  tuneforge compare --out runs/compare --report-only   # re-render from results.json\n"
        "writes results.json, report.md and report.html (self-contained) into --out",
    )
    compare.add_argument("--out", required=True, help="output folder")
    compare.add_argument(
        "--budget", default="quick", choices=["quick", "full"], help="how much to train and ask"
    )
    compare.add_argument("--model", default="default", help="base model reference")
    compare.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    compare.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is faster on a busy shared machine",
    )
    compare.add_argument(
        "--report-only", action="store_true", help="only re-render the report from OUT/results.json"
    )
    compare.set_defaults(func=run_compare)


def run_eval(args: argparse.Namespace) -> int:
    from tuneforge.errors import DataError
    from tuneforge.evaluate.runner import evaluate, format_table, load_eval_data
    from tuneforge.generation import GenerationSettings

    data = load_eval_data(args.data)
    if args.limit:
        data = data[: args.limit]
    schema = None
    if args.schema:
        try:
            schema = json.loads(Path(args.schema).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{args.schema}: cannot read the JSON schema ({err})") from err
    model, tokenizer, _ = load_model_from_options(args)  # the base the adapter was trained on
    store = None
    if args.store:
        from tuneforge.rag import RagStore

        store = RagStore.open(Path(args.store))
    result = evaluate(
        model,
        tokenizer,
        data,
        args.metric,
        store,
        schema=schema,
        settings=GenerationSettings(max_new_tokens=args.max_new_tokens),
        progress=True,
    )
    print(format_table(result))
    if args.out:
        from tuneforge.atomic import write_json

        write_json(Path(args.out), result.to_dict())
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from tuneforge.evaluate.report import write_report
    from tuneforge.evaluate.results import load_comparison

    out = Path(args.out)
    if args.report_only:
        comparison = load_comparison(out / "results.json")
    else:
        from tuneforge.evaluate.compare import compare

        comparison = compare(
            out, budget=args.budget, model=args.model, device=args.device, num_threads=args.threads
        )
    md_path, html_path = write_report(comparison, out)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {md_path} and {html_path}", file=sys.stderr)
    return 0
