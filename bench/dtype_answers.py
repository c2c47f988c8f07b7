"""What ``--dtype auto`` changes: greedy answers in float32 and bfloat16 on the bundled sets.

``auto`` picks bf16 where the hardware computes it natively (tuneforge.models.device), which
decodes faster and can change greedy answers after a few tokens. This runs the bundled
evaluation sets through ``tuneforge.evaluate.evaluate`` with both dtypes, fast path, greedy:

- the general-knowledge questions (``contains_answer``), plain prompt;
- the knowledge-base questions with retrieval (``contains_answer``, ``refusal``, ``citation``),
  the RAG prompt ``rag ask`` uses, top 3 hits;
- the held-out JSON orders (schema-valid rate, field accuracy).

and reports each metric for both dtypes, how many answers are identical, and a few that differ.

    .venv/bin/python bench/dtype_answers.py            # every item
    .venv/bin/python bench/dtype_answers.py --limit 8  # a smoke run

Writes bench/results/dtype_answers.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import DEFAULT_HOME, markdown_table, report

DTYPES = ("float32", "bfloat16")


def eval_sets(limit: int | None) -> dict[str, tuple[list[dict], list[str], int]]:
    """name -> (items, metrics, max_new_tokens) of the bundled sets."""
    from tuneforge.evaluate import load_eval_data
    from tuneforge.evaluate.compare import general_asset, knowledge_items
    from tuneforge.evaluate.runner import normalize_item
    from tuneforge.tasks import json_orders

    orders = [
        {"prompt": r["prompt"], "system": r["system"], "expected": r["expected"]}
        for r in json_orders.load_records("test")
    ]
    return {
        "general questions": (
            load_eval_data(general_asset("questions.jsonl"))[:limit],
            ["contains_answer"],
            32,
        ),
        "knowledge base + RAG": (
            [normalize_item(item) for item in knowledge_items()[:limit]],
            ["contains_answer", "refusal", "citation"],
            48,
        ),
        "JSON orders": (orders[:limit], ["json"], 64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="items per set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="tuneforge cache root")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tuneforge.evaluate import evaluate
    from tuneforge.evaluate.runner import plain_responder, rag_responder
    from tuneforge.generation import GenerationSettings
    from tuneforge.models import load_model
    from tuneforge.models.bundled import ensure_default_model
    from tuneforge.rag import RagStore
    from tuneforge.tasks import json_orders
    from tuneforge.tasks.knowledge_base import corpus_dir

    model_dir = ensure_default_model(args.home, progress=False)
    sets = eval_sets(args.limit)
    results: dict[tuple[str, str], object] = {}
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-dtype-") as scratch:
        store = RagStore(Path(scratch) / "kb")
        store.ingest([corpus_dir()], progress=False)
        for dtype in DTYPES:
            loaded = load_model(str(model_dir), dtype=dtype, device="cpu", progress=False)
            model, tokenizer = loaded.model, loaded.tokenizer
            for name, (items, metrics, new_tokens) in sets.items():
                settings = GenerationSettings(max_new_tokens=new_tokens)
                if name.endswith("RAG"):
                    responder = rag_responder(model, tokenizer, store, settings, top_k=3)
                else:
                    responder = plain_responder(model, tokenizer, settings)
                print(f"{dtype}: {name} ({len(items)} items)", file=sys.stderr, flush=True)
                results[(dtype, name)] = evaluate(
                    model,
                    tokenizer,
                    items,
                    metrics,
                    store=store if name.endswith("RAG") else None,
                    schema=json_orders.SCHEMA,
                    responder=responder,
                )
    table, examples = [], []
    for name in sets:
        first, second = (results[(dtype, name)] for dtype in DTYPES)
        replies = [(a["reply"], b["reply"]) for a, b in zip(first.rows, second.rows, strict=True)]
        same = sum(a == b for a, b in replies)
        shown = [
            k
            for k in first.metrics
            if not k.startswith(("n_", "latency")) and isinstance(first.metrics[k], float)
        ]
        for key in shown:
            table.append([name, key, f"{first.metrics[key]:.3f}", f"{second.metrics[key]:.3f}", ""])
        table.append([name, "identical answers", "", "", f"{same}/{len(replies)}"])
        for (a, b), row in zip(replies, first.rows, strict=True):
            if a != b and len([e for e in examples if e[0] == name]) < 3:
                examples.append([name, row["prompt"][:60], a[:80], b[:80]])
    load = os.getloadavg()
    body = "\n\n".join(
        [
            "Default model (SmolLM2-135M-Instruct), greedy, fast path; the same items in both "
            f"dtypes (load average {load[0]:.1f} at the end; answers do not depend on it).",
            markdown_table(["set", "metric", "float32", "bfloat16", "same"], table),
            "### Answers that differ (first 3 per set)",
            markdown_table(["set", "prompt", "float32", "bfloat16"], examples)
            if examples
            else "none",
        ]
    )
    report("dtype_answers", "float32 vs bfloat16 greedy answers on the bundled sets", body)


if __name__ == "__main__":
    main()
