"""Large files stream: embedded and committed batch by batch, memory bounded, progress shown."""

from __future__ import annotations

import pytest
from hashing_embedder import HashingEmbedder
from rag_samples import write_docs

from tuneforge.cli import main
from tuneforge.rag import RagStore


class RecordingEmbedder(HashingEmbedder):
    """Notes, at every ``encode`` call, its batch size and the chunks already committed."""

    def __init__(self, folder, fail_after: int | None = None) -> None:
        super().__init__()
        self.folder, self.fail_after = folder, fail_after
        self.calls: list[tuple[int, int]] = []

    def encode(self, texts, batch_size=32, progress=False):
        committed = RagStore.open(self.folder, embedder=HashingEmbedder()).stats().chunks
        self.calls.append((len(texts), committed))
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) between two batches
        return super().encode(texts)


def _long_text(paragraphs: int) -> str:
    return "\n\n".join(
        f"Paragraph {i}: the pump at station {i} delivers {i % 50} litres per minute."
        for i in range(paragraphs)
    )


def test_a_large_file_is_committed_batch_by_batch(tmp_path):
    """A 20 MB file used to be embedded whole before anything was written (4.4 GB RSS)."""
    docs = write_docs(tmp_path / "docs", {"big.txt": _long_text(400), "small.md": "# S\n\nA."})
    embedder = RecordingEmbedder(tmp_path / "store")
    store = RagStore(tmp_path / "store", embedder=embedder, chunk_size=32, overlap=0)
    report = store.ingest(docs, progress=False, batch_chunks=16)
    sizes = [size for size, _ in embedder.calls]
    committed_before = [committed for _, committed in embedder.calls]
    assert report.chunks > 100 and sum(sizes) == report.chunks
    assert max(sizes) <= 16  # never more than a batch in memory
    # Each batch was committed (and visible to readers) before the next one was embedded.
    assert committed_before == [16 * i for i in range(len(sizes))]
    stats = store.stats()
    assert (stats.documents, stats.incomplete, stats.chunks) == (2, 0, report.chunks)


def test_an_interrupted_ingest_leaves_a_consistent_store_that_the_next_one_completes(tmp_path):
    docs = write_docs(tmp_path / "docs", {"a.md": "# A\n\nFirst.", "big.txt": _long_text(200)})
    store_dir = tmp_path / "store"
    RagStore(store_dir, embedder=HashingEmbedder(), chunk_size=32, overlap=0)
    interrupted = RagStore(store_dir, embedder=RecordingEmbedder(store_dir, fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        interrupted.ingest(docs, progress=False, batch_chunks=8)

    store = RagStore.open(store_dir, embedder=HashingEmbedder())
    stats = store.stats()
    big = next(r for r in store.documents() if r.source.endswith("big.txt"))
    assert stats.documents == 2 and stats.incomplete == 1 and not big.complete
    assert stats.chunks == 24  # three committed batches: a.md's chunk and big.txt's first 23
    assert store.search("pump station", top_k=3)  # readable and searchable meanwhile

    report = store.ingest(docs, progress=False, batch_chunks=8)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 1)
    stats = store.stats()
    assert stats.incomplete == 0
    assert stats.chunks == sum(record.chunks for record in store.documents())
    assert store.ingest(docs, progress=False).unchanged == 2


def test_cli_ingest_reports_progress_in_lines_for_logs(tmp_path, capsys):
    docs = write_docs(tmp_path / "docs", {"pump.md": "# Pump\n\nThe Orla pump costs 70 euros."})
    assert main(["rag", "ingest", "--store", str(tmp_path / "kb"), str(docs)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert next(line for line in err.splitlines() if line.startswith("ingest:")).startswith(
        "ingest: 1 chunks · file=1/1 pump.md"
    )
