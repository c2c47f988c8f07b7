"""Run one ingest in this process (tests start it as a child, to race it or to kill it).

    python ingest_worker.py STORE DOCS [--delay-s S] [--batch-chunks N]

Uses the hashing embedder (no torch import). Prints ``opening`` before it opens the store, ``ingesting`` once it is open and
``done <added> <updated> <unchanged>`` at the end, each on its own flushed line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hashing_embedder import HashingEmbedder

from tuneforge.rag import RagStore


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("docs")
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--batch-chunks", type=int, default=None)
    args = parser.parse_args()
    print("opening", flush=True)
    store = RagStore(args.store, embedder=HashingEmbedder(delay_s=args.delay_s))
    print("ingesting", flush=True)
    options = {} if args.batch_chunks is None else {"batch_chunks": args.batch_chunks}
    report = store.ingest(args.docs, progress=False, **options)
    print(f"done {report.added} {report.updated} {report.unchanged}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
