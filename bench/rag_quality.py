"""Retrieval quality on the bundled knowledge base: hit@1, hit@5 and MRR per mode.

A hit is a retrieved chunk from a document that states the answer (the question's ``sources``).
MRR is the mean of 1/rank of the first such chunk within the top 10 (0 when none).

With ``--answers`` it also answers every question with a model (default: the bundled
SmolLM2-135M-Instruct) and reports how often the answer contains the expected fact, cites a
source that states it, and refuses the questions the documents do not answer.

    .venv/bin/python bench/rag_quality.py                 # retrieval only (~1 min on 2 cores)
    .venv/bin/python bench/rag_quality.py --answers       # + generation (~5 min on 2 cores)
    .venv/bin/python bench/rag_quality.py --answers --limit 10   # quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, report

DEPTH = 10


def retrieval_table(store, items) -> tuple[str, dict]:
    rows, details = [], {}
    for mode in ("dense", "bm25", "hybrid"):
        ranks, seconds = [], []
        for q in items:
            start = time.perf_counter()
            hits = store.search(q.question, top_k=DEPTH, mode=mode)
            seconds.append(time.perf_counter() - start)
            names = [Path(hit.source).name for hit in hits]
            ranks.append(next((i for i, n in enumerate(names, 1) if n in q.sources), None))
        n = len(ranks)
        hit1 = sum(r == 1 for r in ranks) / n
        hit5 = sum(r is not None and r <= 5 for r in ranks) / n
        mrr = sum(1 / r for r in ranks if r) / n
        details[mode] = ranks
        rows.append(
            [
                mode,
                f"{hit1:.3f}",
                f"{hit5:.3f}",
                f"{mrr:.3f}",
                f"{statistics.median(seconds) * 1000:.0f}",
            ]
        )
    table = markdown_table(["mode", "hit@1", "hit@5", f"MRR@{DEPTH}", "median ms/query"], rows)
    return table, details


def similarity_table(store, items) -> str:
    """The best hit's cosine similarity, answerable vs unanswerable (the refusal threshold)."""
    groups: dict[str, list[float]] = {"answerable": [], "unanswerable": []}
    for q in items:
        best = store.search(q.question, top_k=1, mode="dense")[0].similarity
        groups["answerable" if q.answerable else "unanswerable"].append(best)
    rows = [
        [name, len(v), f"{min(v):.2f}", f"{statistics.median(v):.2f}", f"{max(v):.2f}"]
        for name, v in groups.items()
        if v
    ]
    return markdown_table(["questions", "n", "min", "median", "max"], rows)


def answers_table(store, items, model_ref: str, top_k: int, mode: str) -> tuple[str, list[str]]:
    from tuneforge.generation import GenerationSettings
    from tuneforge.models import load_model
    from tuneforge.rag import answer, parse_citations

    loaded = load_model(model_ref)
    settings = GenerationSettings(max_new_tokens=64)
    correct = cited_right = refused_right = answerable = unanswerable = false_refusals = 0
    seconds, examples = [], []
    for q in items:
        result = answer(q.question, store, loaded.model, loaded.tokenizer, top_k, settings, mode)
        if result.reply:
            seconds.append(result.reply.seconds)
        cited = [
            Path(result.hits[n - 1].source).name
            for n in parse_citations(result.text, len(result.hits))
        ]
        if q.answerable:
            answerable += 1
            correct += q.matches(result.text)
            cited_right += any(name in q.sources for name in cited)
            false_refusals += result.refused
        else:
            unanswerable += 1
            refused_right += result.refused
        if len(examples) < 8:
            examples.append(f"- {q.id} {q.question} → {' '.join(result.text.split())[:160]}")
    rows = [
        [
            "answer contains the expected fact",
            f"{correct}/{answerable}",
            f"{correct / answerable:.2f}",
        ],
        [
            "cites a source that states it",
            f"{cited_right}/{answerable}",
            f"{cited_right / answerable:.2f}",
        ],
        [
            "refused an answerable question",
            f"{false_refusals}/{answerable}",
            f"{false_refusals / answerable:.2f}",
        ],
    ]
    if unanswerable:
        rows.append(
            [
                "refused an unanswerable question",
                f"{refused_right}/{unanswerable}",
                f"{refused_right / unanswerable:.2f}",
            ]
        )
    if seconds:
        rows.append(["median generation time (s)", "", f"{statistics.median(seconds):.1f}"])
    return markdown_table(["measure", "count", "rate"], rows), examples


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", action="store_true", help="also generate answers with --model")
    parser.add_argument("--model", default="default", help="model for --answers")
    parser.add_argument("--top-k", type=int, default=3, help="sources in the prompt for --answers")
    parser.add_argument("--mode", default="hybrid", help="retrieval mode for --answers")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    args = parser.parse_args()

    from tuneforge.rag import MIN_SIMILARITY, RagStore
    from tuneforge.tasks.knowledge_base import corpus_dir, questions

    items = questions()
    if args.limit:
        answerable = [q for q in items if q.answerable][: args.limit]
        items = answerable + [q for q in items if not q.answerable][: max(1, args.limit // 5)]
    with tempfile.TemporaryDirectory() as tmp:
        store = RagStore(Path(tmp) / "kb")
        ingest = store.ingest(corpus_dir(), progress=False)
        answerable = [q for q in items if q.answerable]
        table, _ = retrieval_table(store, answerable)
        stats = store.stats()
        body = (
            f"Bundled knowledge base: {stats.documents} documents, {stats.chunks} chunks "
            f"({stats.chunk_size}-token chunks, overlap {stats.overlap}), embedding model "
            f"{stats.embedding_model}; {len(answerable)} answerable questions; ingest "
            f"{ingest.seconds:.1f} s.\n\n### Retrieval\n\n{table}\n\n"
            f"### Best dense similarity per question (refusal threshold {MIN_SIMILARITY})\n\n"
            f"{similarity_table(store, items)}\n"
        )
        if args.answers:
            answers, examples = answers_table(store, items, args.model, args.top_k, args.mode)
            body += (
                f"\n### Answers: model {args.model}, {args.mode} retrieval, top-{args.top_k} "
                f"sources, greedy\n\n{answers}\n\nFirst answers:\n\n" + "\n".join(examples) + "\n"
            )
    report("rag_quality", "RAG retrieval and answer quality on the bundled knowledge base", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
