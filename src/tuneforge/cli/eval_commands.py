"""``tuneforge eval`` (metrics on a data file) and ``tuneforge compare`` (arms × tasks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tuneforge.cli.options import HelpFormatter, add_model_options, load_model_from_options


def register(subparsers) -> None:
    from tuneforge.evaluate.runner import EVAL_BATCH_SIZE, METRICS

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
        "  tuneforge eval --data demo:test --metric json latency "
        "--json-schema orders.schema.json   # constrained decoding\n"
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
        choices=METRICS,
        help="metrics to compute",
    )
    evaluate.add_argument("--schema", default=None, help="JSON schema file for the json metric")
    evaluate.add_argument(
        "--json-schema",
        default=None,
        metavar="FILE",
        help="decode every reply under this JSON schema (constrained decoding); also the json "
        "metric's schema unless --schema is given",
    )
    evaluate.add_argument("--limit", type=int, default=None, help="score only the first N items")
    evaluate.add_argument("--max-new-tokens", type=int, default=128, help="most tokens per reply")
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=EVAL_BATCH_SIZE,
        help="items decoded together; latency is then per answer within such a batch "
        "(1: single-stream latency)",
    )
    evaluate.add_argument("--out", default=None, help="write the results (metrics + rows) as JSON")
    evaluate.set_defaults(func=run_eval)

    compare = subparsers.add_parser(
        "compare",
        help="base vs RAG vs fine-tuned vs both vs RAFT+RAG, on the bundled tasks or your data",
        formatter_class=HelpFormatter,
        epilog="examples:\n"
        "  tuneforge compare --out runs/compare                 # the bundled tasks, quick budget\n"
        "  tuneforge compare --out runs/mine --docs docs/ --questions qa.jsonl\n"
        "  tuneforge compare --out runs/mine --docs docs/ --questions qa.jsonl "
        "--train task.jsonl --schema task.schema.json\n"
        "  tuneforge compare --out runs/compare --budget full   # firmer numbers (~10x the work)\n"
        "  tuneforge compare --out runs/compare --report-only   # re-render from results.json\n"
        'questions: JSONL of {"question", "answer" (null: no document answers it), "source" '
        "(optional file)}; the held-out share is never trained on. Every rate is reported with "
        "its 95% interval; a winner is named only where the intervals separate.\n"
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
        "--docs", default=None, help="your documents (a folder or file) to answer questions from"
    )
    compare.add_argument(
        "--questions", default=None, help="JSONL of questions about --docs (QA records)"
    )
    compare.add_argument(
        "--train",
        default=None,
        help="your form task: chat JSONL whose last assistant turn is a JSON object",
    )
    compare.add_argument("--schema", default=None, help="JSON schema of the --train replies")
    compare.add_argument(
        "--holdout",
        type=float,
        default=0.3,
        help="share of the questions (and --train records) held out from every fine-tune",
    )
    compare.add_argument("--seed", type=int, default=0, help="seed of the splits and trainings")
    compare.add_argument(
        "--report-only", action="store_true", help="only re-render the report from OUT/results.json"
    )
    compare.set_defaults(func=run_compare)


def run_eval(args: argparse.Namespace) -> int:
    from tuneforge.errors import ConfigError, DataError
    from tuneforge.evaluate.runner import evaluate, format_table, load_eval_data
    from tuneforge.generation import GenerationSettings, read_json_schema, validate_json_schema

    if args.json_schema and args.store:
        raise ConfigError(
            "--json-schema with --store: answers with retrieval are not decoded under a schema "
            "yet; drop one of the two"
        )
    data = load_eval_data(args.data)
    if args.limit:
        data = data[: args.limit]
    constraint = read_json_schema(args.json_schema) if args.json_schema else None
    if constraint is not None:
        validate_json_schema(constraint)  # before the model loads
    schema = constraint
    if args.schema:
        try:
            schema = json.loads(Path(args.schema).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{args.schema}: cannot read the JSON schema ({err})") from err
    model, tokenizer, _ = load_model_from_options(args)  # the base the adapter was trained on
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    store = responder = None
    if args.store:
        from tuneforge.evaluate.runner import rag_responder
        from tuneforge.rag import RagStore
        from tuneforge.rag.raft import trained_prompt

        store = RagStore.open(Path(args.store))
        # a RAFT adapter (or full fine-tune's model folder) is asked as it was trained
        trained = trained_prompt(args.adapter or args.model)
        if trained is not None:
            responder = rag_responder(
                model,
                tokenizer,
                store,
                settings,
                top_k=trained["top_k"],
                prompt_format=trained["prompt_format"],
                client_system=trained["client_system"],
            )
    if constraint is not None:  # refused with --store above
        from tuneforge.evaluate.constrained import constrained_responder

        responder = constrained_responder(model, tokenizer, constraint, settings)
    result = evaluate(
        model,
        tokenizer,
        data,
        args.metric,
        store,
        responder=responder,
        schema=schema,
        settings=settings,
        progress=True,
        batch_size=args.batch_size,
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
            out,
            budget=args.budget,
            model=args.model,
            device=args.device,
            num_threads=args.threads,
            docs=args.docs,
            questions=args.questions,
            train=args.train,
            schema=args.schema,
            holdout=args.holdout,
            seed=args.seed,
        )
    md_path, html_path = write_report(comparison, out)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {md_path} and {html_path}", file=sys.stderr)
    return 0
