"""``RagStore`` over any ``VectorStore``: a small in-memory one, written here, plugs in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rag_samples import write_docs

from tuneforge.rag import ChunkRecord, DocumentRecord, RagStore, VectorStore, answer

DOCS = {
    "pump.md": "# Pump\n\nThe Orla pump costs 70 euros.",
    "depot.txt": "Depot\n\nThe Vesk depot opens at 06:45.",
}


class MemoryVectorStore:
    """Chunks in a dict; cosine by a dot product of unit vectors; text score = shared words."""

    def __init__(self) -> None:
        self.docs: dict[str, DocumentRecord] = {}
        self.chunks: dict[str, ChunkRecord] = {}
        self.optimized = 0

    def documents(self) -> dict[str, DocumentRecord]:
        return dict(self.docs)

    def upsert_documents(self, records: list[DocumentRecord]) -> None:
        self.docs.update({record.doc_id: record for record in records})

    def delete_documents(self, doc_ids: list[str]) -> None:
        for doc_id in doc_ids:
            self.docs.pop(doc_id, None)

    def add_chunks(self, chunks: list[ChunkRecord]) -> None:
        self.chunks.update({chunk.chunk_id: chunk for chunk in chunks})

    def delete_chunks(self, doc_ids: list[str]) -> None:
        self.chunks = {k: c for k, c in self.chunks.items() if c.doc_id not in doc_ids}

    def count_chunks(self) -> int:
        return len(self.chunks)

    def _under(self, source_prefix: str | None) -> list[ChunkRecord]:
        return [
            c
            for c in self.chunks.values()
            if not source_prefix
            or c.source == source_prefix
            or c.source.startswith(source_prefix.rstrip("/") + "/")
        ]

    def dense_search(self, vector, limit, source_prefix=None):
        scored = [(c, float(np.dot(vector, c.vector))) for c in self._under(source_prefix)]
        return sorted(scored, key=lambda pair: -pair[1])[:limit]

    def text_search(self, query, limit, source_prefix=None):
        words = set(query.lower().split())
        scored = [
            (c, float(len(words & set(c.search_text.lower().split()))))
            for c in self._under(source_prefix)
        ]
        return sorted([p for p in scored if p[1] > 0], key=lambda pair: -pair[1])[:limit]

    def optimize(self) -> None:
        self.optimized += 1


def test_a_plugged_vector_store_holds_the_chunks(tmp_path, embedder):
    memory = MemoryVectorStore()
    assert isinstance(memory, VectorStore)
    docs = write_docs(tmp_path / "docs", DOCS)
    store = RagStore(tmp_path / "store", embedder=embedder, vector_store=memory)

    report = store.ingest(docs, progress=False)
    assert (report.added, report.chunks) == (2, 2)
    assert store.vectors is memory and memory.count_chunks() == 2 and memory.optimized == 1
    assert not (tmp_path / "store" / "lance").exists()  # LanceDB never opened
    assert store.stats().chunks == 2

    for mode in ("dense", "bm25", "hybrid"):
        hits = store.search("How much does the Orla pump cost?", top_k=1, mode=mode)
        assert Path(hits[0].source).name == "pump.md" and "70 euros" in hits[0].text
        assert hits[0].similarity > 0.3  # similarity comes from the stored vectors
    only_depot = store.search("pump", top_k=2, source_filter=docs / "depot.txt")
    assert [Path(h.source).name for h in only_depot] == ["depot.txt"]

    # Answering and re-ingesting go through the plugged store as well.
    refused = answer("Who won the football world cup in 1998?", store, None, None)
    assert refused.refused and refused.hits == []
    (docs / "pump.md").write_text("# Pump\n\nThe Orla pump costs 75 euros.", encoding="utf-8")
    assert store.ingest(docs, progress=False).updated == 1
    assert "75 euros" in store.search("Orla pump price", top_k=1)[0].text
    assert [r.source for r in store.remove(docs / "pump.md")] == [str(docs / "pump.md")]
    assert memory.count_chunks() == 1
