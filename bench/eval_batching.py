"""Evaluation answers in batches vs one question at a time: the answering of ``tuneforge compare``.

``evaluate`` (and so ``eval`` and ``compare``) used to answer its items one at a time; it now
decodes them 16 at a time through the one decoding path. This bench runs workloads the size
and kind of ``tuneforge compare --budget quick``'s on the default model (the first bundled
questions rather than compare's held-out draw), both ways, in one process, rounds interleaved,
and reports wall seconds, the speed-up, and whether the replies changed:

- 16 answerable and 6 unanswerable knowledge questions with retrieval (``base+rag``: the
  bundled store, 3 sources each);
- the same questions and the general questions without retrieval (``base``);
- the JSON order prompts under the order schema (``base+constrained``).

Usage::

    .venv/bin/python bench/eval_batching.py               # auto dtype, 2 rounds
    .venv/bin/python bench/eval_batching.py --rounds 1 --threads 1

Writes ``bench/results/eval_batching.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import DEFAULT_HOME, markdown_table, report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  .venv/bin/python bench/eval_batching.py --rounds 2 --threads 2",
    )
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="tuneforge cache root")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best kept)")
    parser.add_argument("--batch-size", type=int, default=16, help="the batched runs' batch size")
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16")
    return parser.parse_args()


def workloads(model, tokenizer, store):
    """(name, items, metrics, responder) of compare --budget quick's answering, base model."""
    from tuneforge.evaluate.compare import BUDGETS, RAG_TOP_K, general_asset
    from tuneforge.evaluate.constrained import constrained_responder
    from tuneforge.evaluate.runner import load_eval_data, plain_responder, rag_responder
    from tuneforge.generation import GenerationSettings
    from tuneforge.rag.qa_records import read_qa_records
    from tuneforge.tasks import json_orders
    from tuneforge.tasks.knowledge_base import questions_path

    b = BUDGETS["quick"]
    records = read_qa_records(questions_path())
    answerable = [r for r in records if r.answers][: b.kb_answerable]
    unanswerable = [r for r in records if not r.answers][: b.kb_unanswerable]
    knowledge = [r.eval_item() for r in answerable + unanswerable]
    general = load_eval_data(general_asset("questions.jsonl"))[: b.general_questions]
    orders = json_orders.load_records("test")[: b.json_prompts]
    qa = GenerationSettings(max_new_tokens=b.max_new_tokens)
    form = GenerationSettings(max_new_tokens=b.json_max_new_tokens)
    qa_metrics = ["contains_answer", "refusal", "latency"]
    return [
        (
            f"knowledge, base+rag ({len(knowledge)} questions)",
            knowledge,
            qa_metrics,
            rag_responder(model, tokenizer, store, qa, top_k=RAG_TOP_K),
        ),
        (
            f"knowledge + general, base ({len(knowledge) + len(general)} questions)",
            knowledge + general,
            qa_metrics,
            plain_responder(model, tokenizer, qa),
        ),
        (
            f"JSON orders, base+constrained ({len(orders)} prompts)",
            orders,
            ["json", "latency"],
            constrained_responder(model, tokenizer, json_orders.SCHEMA, form, None),
        ),
    ]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tuneforge.evaluate.runner import evaluate
    from tuneforge.models import load_model
    from tuneforge.models.bundled import ensure_default_model
    from tuneforge.rag import RagStore, load_embedder
    from tuneforge.tasks.knowledge_base import corpus_dir

    loaded = load_model(str(ensure_default_model(args.home, progress=False)), dtype=args.dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        store = RagStore(Path(tmp) / "kb", embedder=load_embedder())
        store.ingest(corpus_dir(), progress=False)
        work = workloads(model, tokenizer, store)
        evaluate(model, tokenizer, work[1][1][:2], work[1][2], responder=work[1][3])  # warm-up
        best: dict[tuple[str, int], float] = {}
        replies: dict[tuple[str, int], list[str]] = {}
        scores: dict[tuple[str, int], dict] = {}
        for _ in range(args.rounds):
            for name, items, metrics, responder in work:
                for size in (1, args.batch_size):
                    start = time.perf_counter()
                    result = evaluate(
                        model, tokenizer, items, metrics, responder=responder, batch_size=size
                    )
                    seconds = time.perf_counter() - start
                    key = (name, size)
                    best[key] = min(best.get(key, float("inf")), seconds)
                    replies[key] = [row["reply"] for row in result.rows]
                    scores[key] = result.metrics
    load_after = os.getloadavg()
    rows = []
    for name, _items, metrics, _ in work:
        one, many = (name, 1), (name, args.batch_size)
        same = sum(a == b for a, b in zip(replies[one], replies[many], strict=True))
        metric = "schema_valid" if "json" in metrics else "contains_answer"
        rows.append(
            [
                name,
                f"{best[one]:.1f}",
                f"{best[many]:.1f}",
                f"{best[one] / best[many]:.1f}x",
                f"{same}/{len(replies[one])}",
                f"{scores[one][metric]:.0%} / {scores[many][metric]:.0%}",
                f"{scores[one]['latency_mean_s']:.2f} / {scores[many]['latency_mean_s']:.2f}",
            ]
        )
    total_one = sum(best[(name, 1)] for name, *_ in work)
    total_many = sum(best[(name, args.batch_size)] for name, *_ in work)
    rows.append(
        [
            "all three",
            f"{total_one:.1f}",
            f"{total_many:.1f}",
            f"{total_one / total_many:.1f}x",
            "",
            "",
            "",
        ]
    )
    headers = [
        "workload (compare --budget quick, base model)",
        "one at a time s",
        f"batches of {args.batch_size} s",
        "speed-up",
        "same replies",
        "headline rate (one / batched)",
        "mean latency s (one / batched)",
    ]
    body = (
        f"Default model, {dtype}, {args.threads} threads, best of {args.rounds} interleaved "
        f"rounds; load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end "
        "(other processes shared the cores: compare rows of one run). The headline rate is "
        "contains_answer (schema_valid for the JSON prompts). Latency is per answer: alone, "
        "or within its batch.\n\n" + markdown_table(headers, rows)
    )
    report("eval_batching", "Evaluation answers: batches vs one at a time", body)


if __name__ == "__main__":
    main()
