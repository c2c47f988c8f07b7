"""SIGKILL an ingest at random points: the store always opens, searches and stays consistent."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import lancedb
import pytest
from hashing_embedder import HashingEmbedder
from rag_samples import write_docs
from test_concurrency import start_worker, wait_for_line

from tuneforge.rag import RagStore

DOCUMENTS = 300


@pytest.fixture(scope="module")
def many_docs(tmp_path_factory):
    """300 small documents; every fifth is long enough for several chunks."""
    docs = {}
    for i in range(DOCUMENTS):
        body = f"Station {i} pump delivers {i % 40} litres per minute."
        if i % 5 == 0:
            body = "\n\n".join(f"{body} Paragraph {p} of the valve log." for p in range(12))
        docs[f"d{i:03d}.md"] = f"# Doc {i}\n\n{body}"
    return write_docs(tmp_path_factory.mktemp("many"), docs)


def check_consistent(store: RagStore) -> None:
    """Every chunk belongs to a document row; a complete row has exactly its chunks."""
    chunks = lancedb.connect(str(store.folder / "lance")).open_table("chunks").to_arrow()
    per_document = Counter(chunks.column("doc_id").to_pylist())
    ids = chunks.column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate chunks"
    documents = {record.doc_id: record for record in store.documents()}
    assert set(per_document) <= set(documents), "chunks without a document row"
    for doc_id, record in documents.items():
        if record.complete:
            assert per_document[doc_id] == record.chunks, record.source
    stats = store.stats()
    assert stats.chunks == len(ids)
    assert stats.incomplete == sum(not record.complete for record in documents.values())
    for mode in ("dense", "bm25", "hybrid"):
        store.search("pump litres", top_k=3, mode=mode)


def kill_at_a_random_commit(store_dir, docs, rng: random.Random) -> None:
    """Start an ingest, SIGKILL it after a random number of committed chunks plus jitter."""
    worker = start_worker(store_dir, docs, "--batch-chunks", "8", "--delay-s", "0.002")
    wait_for_line(worker, "ingesting")
    reader = RagStore.open(store_dir, embedder=HashingEmbedder())
    target = rng.randrange(1, 400)
    deadline = time.monotonic() + 60
    while reader.stats().chunks < target and worker.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.05))  # anywhere between two commits, or inside one
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sigkilled_ingests_leave_a_store_that_opens_searches_and_completes(
    tmp_path, many_docs, seed
):
    rng = random.Random(seed)
    store_dir = tmp_path / "store"
    RagStore(store_dir, embedder=HashingEmbedder(), chunk_size=32, overlap=0)
    for _ in range(2):  # killed twice: the second ingest starts from a killed one's state
        kill_at_a_random_commit(store_dir, many_docs, rng)
        check_consistent(RagStore.open(store_dir, embedder=HashingEmbedder()))

    store = RagStore.open(store_dir, embedder=HashingEmbedder())
    before = {record.doc_id for record in store.documents() if record.complete}
    report = store.ingest(many_docs, progress=False)
    assert report.unchanged == len(before)
    assert report.added + report.updated + report.unchanged == DOCUMENTS
    check_consistent(store)
    stats = store.stats()
    assert (stats.documents, stats.incomplete) == (DOCUMENTS, 0)
    assert stats.chunks == sum(record.chunks for record in store.documents())
    assert store.ingest(many_docs, progress=False).unchanged == DOCUMENTS
    assert store.stats().chunks == stats.chunks
