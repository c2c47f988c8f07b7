"""RAG speed: ingestion rate (chunks/s) and query latency (p50/p95) on a large synthetic store.

Two parts:

1. Ingestion through the full pipeline (parse, chunk, embed with the bundled all-MiniLM-L6-v2,
   write) of synthetic Markdown files totalling about ``--ingest-chunks`` chunks.
2. A store of ``--chunks`` synthetic chunks (default 100,000). Embedding that many chunks takes
   about half an hour on 2 CPU cores, so by default their vectors are the real embeddings of
   part 1's chunks plus small noise (re-normalised), written straight through the store's
   ``VectorStore`` interface; ``--embed-all`` embeds every chunk instead (use on a GPU). Queries
   are real questions embedded at query time; latency is measured end to end through
   ``RagStore.search`` (query embedding + search), first with exact (flat) vector search, then
   after the store builds its IVF-PQ index.

    .venv/bin/python bench/rag.py                       # 100,000 chunks (~5 min on 2 cores)
    .venv/bin/python bench/rag.py --chunks 20000 --ingest-chunks 500 --queries 20   # quick

``--large-file-mb 20`` measures instead one large file streamed into a new store (the ingest
runs in a child process): its peak RSS, the time to its first committed chunk and the chunks
committed within ``--large-file-seconds``. The child only calls ``RagStore(...).ingest(file)``
and the parent reads the committed rows with LanceDB directly, so the same command measures an
older checkout (``PYTHONPATH=old/src``) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import markdown_table, peak_rss_bytes, report

QUERIES = [
    "How long is the warranty on the pump?",
    "Which depot ships orders to the north?",
    "What does the calibration service cost?",
    "Who manages the river station?",
    "When was the firmware update released?",
    "How many sensors fit on one mast?",
]


def synthetic_words(rng: np.random.Generator, vocabulary: int = 5000) -> list[str]:
    """Pronounceable made-up words (consonant-vowel syllables), distinct."""
    consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
    words: set[str] = set()
    while len(words) < vocabulary:
        syllables = rng.integers(2, 4)
        words.add(
            "".join(
                rng.choice(list(consonants)) + rng.choice(list(vowels)) for _ in range(syllables)
            )
        )
    return sorted(words)


def synthetic_paragraphs(
    rng: np.random.Generator, words: list[str], count: int, length: int = 90
) -> list[str]:
    """Paragraphs of Zipf-distributed words (a few common words, a long tail of rare ones)."""
    ranks = np.minimum(rng.zipf(1.2, size=(count, length)), len(words)) - 1
    return [" ".join(words[i] for i in row).capitalize() + "." for row in ranks]


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    values = np.asarray(seconds) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def time_queries(store, mode: str, count: int) -> tuple[float, float]:
    store.search(QUERIES[0], top_k=5, mode=mode)  # warm caches
    seconds = []
    for i in range(count):
        start = time.perf_counter()
        store.search(QUERIES[i % len(QUERIES)], top_k=5, mode=mode)
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds)


def _committed_rows(lance: Path) -> int:
    """Chunks committed so far, read without the store's code (0 before the table exists)."""
    import lancedb

    try:
        return lancedb.connect(str(lance)).open_table("chunks").count_rows()
    except (ValueError, OSError):  # not created yet
        return 0


def large_file(megabytes: float, seconds: float, seed: int) -> int:
    """Stream one generated file of ``megabytes`` MB into a new store in a child process."""
    import subprocess

    import psutil

    rng = np.random.default_rng(seed)
    words = synthetic_words(rng)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp / "big.txt"
        with big.open("w", encoding="utf-8") as out:
            while out.tell() < megabytes * 1e6:
                out.write("\n\n".join(synthetic_paragraphs(rng, words, 1000)) + "\n\n")
        size = big.stat().st_size
        child_code = (
            "import sys; from tuneforge.rag import RagStore; "
            "RagStore(sys.argv[1]).ingest(sys.argv[2], progress=False)"
        )
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", child_code, str(tmp / "store"), str(big)])
        process = psutil.Process(child.pid)
        peak, first_commit, rows = 0, None, 0
        while child.poll() is None and time.perf_counter() - start < seconds:
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            rows = _committed_rows(tmp / "store" / "lance")
            if rows and first_commit is None:
                first_commit = time.perf_counter() - start
            time.sleep(0.25)
        finished = child.poll() == 0
        elapsed = time.perf_counter() - start
        child.kill()
        child.wait()
        rows = _committed_rows(tmp / "store" / "lance")
    table = markdown_table(
        ["measure", "value"],
        [
            ["file (MB)", f"{size / 1e6:.1f}"],
            [
                "time to first committed chunk (s, model load included)",
                f"{first_commit:.1f}" if first_commit is not None else f"none in {elapsed:.0f} s",
            ],
            [
                "chunks committed",
                f"{rows:,}" + ("" if finished else f" (stopped at {elapsed:.0f} s)"),
            ],
            ["peak RSS of the ingest process (GiB)", f"{peak / 2**30:.2f}"],
        ],
    )
    report("rag_large_file", f"RAG: one {size / 1e6:.0f} MB file streamed into a new store", table)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the large store")
    parser.add_argument(
        "--ingest-chunks", type=int, default=2000, help="chunks for the ingest rate"
    )
    parser.add_argument("--queries", type=int, default=50, help="timed queries per mode")
    parser.add_argument(
        "--embed-all", action="store_true", help="embed every chunk of the large store"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--large-file-mb", type=float, default=None, help="measure one large file instead"
    )
    parser.add_argument(
        "--large-file-seconds", type=float, default=240.0, help="stop the large ingest after this"
    )
    args = parser.parse_args()
    if args.large_file_mb is not None:
        return large_file(args.large_file_mb, args.large_file_seconds, args.seed)

    from tuneforge.rag import RagStore, load_embedder
    from tuneforge.rag.vector_store import ChunkRecord, DocumentRecord

    rng = np.random.default_rng(args.seed)
    words = synthetic_words(rng)
    embedder = load_embedder("default")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # -- 1. ingestion through the full pipeline ---------------------------------------
        docs = tmp / "docs"
        docs.mkdir()
        per_doc = 4  # ~90-word paragraphs: one chunk each at 160 tokens
        paragraphs = synthetic_paragraphs(rng, words, args.ingest_chunks)
        for d in range(0, len(paragraphs), per_doc):
            body = "\n\n".join(paragraphs[d : d + per_doc])
            (docs / f"doc{d // per_doc:05d}.md").write_text(
                f"# Document {d // per_doc}\n\n{body}\n"
            )
        small = RagStore(tmp / "ingest-store", embedder=embedder)
        ingest = small.ingest(docs, progress=False)
        ingest_rate = ingest.chunks / ingest.seconds
        pool = np.stack(
            [
                r.vector
                for r, _ in small.vectors.dense_search(embedder.encode(["x"])[0], ingest.chunks)
            ]
        )

        # -- 2. the large store -----------------------------------------------------------
        store = RagStore(tmp / "large-store", embedder=embedder)
        texts = synthetic_paragraphs(rng, words, args.chunks, length=60)
        start = time.perf_counter()
        if args.embed_all:
            vectors = embedder.encode(texts, batch_size=128, progress=True)
        else:
            noise = rng.normal(scale=0.05, size=(args.chunks, pool.shape[1])).astype(np.float32)
            vectors = pool[rng.integers(0, len(pool), args.chunks)] + noise
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        embed_seconds = time.perf_counter() - start
        start = time.perf_counter()
        batch, per_document = 10_000, 10
        for lo in range(0, args.chunks, batch):
            documents, chunks = [], []
            for d in range(lo, min(lo + batch, args.chunks), per_document):
                doc_id = f"synthetic{d // per_document:07d}"
                source = f"/synthetic/{doc_id}.md"
                records = [
                    ChunkRecord(
                        f"{doc_id}:{i}",
                        doc_id,
                        texts[d + i],
                        texts[d + i],
                        source,
                        doc_id,
                        "text",
                        0,
                        0,
                        vectors[d + i],
                    )
                    for i in range(min(per_document, args.chunks - d))
                ]
                chunks.extend(records)
                documents.append(
                    DocumentRecord(doc_id, source, doc_id, "sha256:-", len(records), "-")
                )
            store.vectors.add_chunks(chunks)
            store.vectors.upsert_documents(documents)
        write_seconds = time.perf_counter() - start
        rows_in_store = store.vectors.count_chunks()

        flat_dense = time_queries(store, "dense", args.queries)
        start = time.perf_counter()
        store.vectors.ann_min_rows = 10**12  # FTS index only, to time it apart
        store.vectors.optimize()
        fts_seconds = time.perf_counter() - start
        flat_bm25 = time_queries(store, "bm25", args.queries)
        flat_hybrid = time_queries(store, "hybrid", args.queries)
        store.vectors.ann_min_rows = 1
        start = time.perf_counter()
        store.vectors.optimize()
        ann_seconds = time.perf_counter() - start
        ann_dense = time_queries(store, "dense", args.queries)
        ann_hybrid = time_queries(store, "hybrid", args.queries)
        query_embed = percentiles([_time(lambda q=q: embedder.encode([q])) for q in QUERIES * 5])

    vector_note = (
        "real embeddings of every chunk"
        if args.embed_all
        else (
            f"real embeddings of the {len(pool)} ingested chunks plus Gaussian noise (σ 0.05), re-normalised"
        )
    )
    ingest_table = markdown_table(
        ["measure", "value"],
        [
            ["chunks ingested (parse + chunk + embed + write)", ingest.chunks],
            ["documents", ingest.added],
            ["ingestion rate (chunks/s)", f"{ingest_rate:.1f}"],
            [
                f"large store: write {rows_in_store:,} chunks with vectors (chunks/s)",
                f"{rows_in_store / write_seconds:,.0f}",
            ],
            [
                "large store: vectors "
                + ("embedded" if args.embed_all else "synthesised")
                + " (s)",
                f"{embed_seconds:.1f}",
            ],
            ["large store: BM25 index build (s)", f"{fts_seconds:.1f}"],
            ["large store: IVF-PQ index build (s)", f"{ann_seconds:.1f}"],
            ["peak RSS (GiB)", f"{peak_rss_bytes() / 2**30:.2f}"],
        ],
    )
    latency_table = markdown_table(
        ["mode", "vector search", "p50 ms", "p95 ms"],
        [
            ["dense", "exact (flat scan)", *(f"{v:.1f}" for v in flat_dense)],
            ["bm25", "-", *(f"{v:.1f}" for v in flat_bm25)],
            ["hybrid", "exact (flat scan)", *(f"{v:.1f}" for v in flat_hybrid)],
            ["dense", "IVF-PQ index", *(f"{v:.1f}" for v in ann_dense)],
            ["hybrid", "IVF-PQ index", *(f"{v:.1f}" for v in ann_hybrid)],
            ["(query embedding alone)", "-", *(f"{v:.1f}" for v in query_embed)],
        ],
    )
    body = (
        f"Large store: {rows_in_store:,} synthetic chunks (60 Zipf-distributed made-up words each); "
        f"vectors: {vector_note}. Latency is end to end through `RagStore.search` (top 5, query "
        f"embedding included), {args.queries} queries per row.\n\n### Ingestion\n\n{ingest_table}\n\n"
        f"### Query latency on {rows_in_store:,} chunks\n\n{latency_table}"
    )
    report("rag", "RAG ingestion rate and query latency", body)
    return 0


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
