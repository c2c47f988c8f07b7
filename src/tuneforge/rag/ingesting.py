"""Ingesting: files in, chunks committed batch by batch, so a kill loses one batch at most.

Files are parsed one at a time; their chunks stream from the chunker into a batch of
``batch_chunks`` chunks, which is embedded, then committed. Memory is one file's text plus one
batch, whatever the number or size of the files, and the first chunks are searchable seconds
after an ingest starts.

A document's chunks can span several batches, so the writes follow an order that keeps the
store consistent wherever a writer is killed (``SIGKILL``, power loss), given that each write
is one atomic commit to one table:

1. before a document's first chunks are written, its row is marked incomplete (empty content
   hash, no chunks) and its old chunks are deleted;
2. its chunks are appended, batch by batch;
3. after its last chunk is stored, its row gets its content hash and chunk count.

So every stored chunk belongs to a document row; a row with a hash has exactly its chunks; an
interrupted document is listed as incomplete and, its hash matching no file, is written again
by the next ingest (or removed with its file). Removing a document runs the same order
backwards: mark incomplete, delete its chunks, delete its row.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tuneforge.errors import ConfigError, DataError
from tuneforge.progress import Progress
from tuneforge.rag.chunking import Chunk, ChunkSettings, chunk_document
from tuneforge.rag.parsing import (
    SUPPORTED_SUFFIXES,
    Document,
    SkippedFile,
    document_id,
    iter_files,
    parse_file,
)
from tuneforge.rag.vector_store import ChunkRecord, DocumentRecord, VectorStore

# Chunks embedded and committed per batch: bounds memory and what a kill loses (about 15 s of
# embedding on 2 CPU cores with the default model), without making thousands of table versions.
WRITE_BATCH_CHUNKS = 256
# Seconds between two progress lines when stderr is not a terminal (a log file, CI).
PROGRESS_INTERVAL_S = 10.0


@dataclass
class IngestReport:
    """What one ingest did (counts of documents, except ``chunks``).

    Attributes:
        added: new documents.
        updated: documents whose content changed, or whose last ingest was interrupted (their
            chunks were replaced).
        unchanged: documents skipped because their content hash matched.
        removed: documents dropped because their file disappeared from an ingested folder.
        skipped: files that could not be used (binary, unreadable, unsupported, empty).
        chunks: chunks embedded and written.
        warnings: one line per skipped file or skipped/altered part of a file.
        seconds: wall time.
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    chunks: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line of counts, e.g. ``added 20, updated 0, ... · 38 chunks embedded in 0.4 s``."""
        return (
            f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, "
            f"removed {self.removed}, skipped {self.skipped} · {self.chunks} chunks embedded "
            f"in {self.seconds:.1f} s"
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def remove_documents(vectors: VectorStore, records: list[DocumentRecord]) -> None:
    """Remove documents and their chunks in the kill-safe order (three commits in all)."""
    if not records:
        return
    ids = [record.doc_id for record in records]
    vectors.upsert_documents([replace(record, content_hash="", chunks=0) for record in records])
    vectors.delete_chunks(ids)
    vectors.delete_documents(ids)


class ChunkBatches:
    """Embeds and commits the chunks of documents in batches, in the kill-safe order.

    Args:
        vectors: where to write.
        embedder: the store's embedding model (``encode(texts)`` gives unit vectors).
        batch_chunks: chunks per batch.
        progress: counts the chunks each commit stored.
    """

    def __init__(
        self, vectors: VectorStore, embedder, batch_chunks: int, progress: Progress
    ) -> None:
        if batch_chunks < 1:
            raise ConfigError(f"batch_chunks must be >= 1, got {batch_chunks}")
        self._vectors = vectors
        self._embedder = embedder
        self._batch_chunks = batch_chunks
        self._progress = progress
        self._starting: list[DocumentRecord] = []  # rows to mark incomplete before the chunks
        self._finished: list[DocumentRecord] = []  # rows to complete after the chunks
        self._pending: list[tuple[str, Document, int, Chunk]] = []

    def write(self, document: Document, chunks: Iterable[Chunk]) -> int:
        """Queue ``document`` with its chunks, committing each batch as it fills.

        Returns:
            how many chunks the document has.
        """
        doc_id, now = document_id(document.source), _now()
        self._starting.append(DocumentRecord(doc_id, document.source, document.title, "", 0, now))
        count = 0
        for chunk in chunks:
            self._pending.append((doc_id, document, count, chunk))
            count += 1
            if len(self._pending) >= self._batch_chunks:
                self._commit()
        self._finished.append(
            DocumentRecord(
                doc_id, document.source, document.title, document.content_hash, count, now
            )
        )
        return count

    def close(self) -> None:
        """Commit what is left."""
        if self._starting or self._pending or self._finished:
            self._commit()

    def _commit(self) -> None:
        # Embed first (the slow part): a kill while embedding leaves the store as it was.
        texts = [f"{doc.title}\n{chunk.text}" for _, doc, _, chunk in self._pending]
        vectors = self._embedder.encode(texts)
        records = [
            ChunkRecord(
                chunk_id=f"{doc_id}:{n}",
                doc_id=doc_id,
                text=chunk.text,
                search_text=text,
                source=doc.source,
                title=doc.title,
                location=chunk.location,
                start=chunk.start,
                end=chunk.end,
                vector=vector,
            )
            for (doc_id, doc, n, chunk), text, vector in zip(
                self._pending, texts, vectors, strict=True
            )
        ]
        if self._starting:
            self._vectors.upsert_documents(self._starting)
            self._vectors.delete_chunks([record.doc_id for record in self._starting])
        self._vectors.add_chunks(records)
        self._vectors.upsert_documents(self._finished)
        self._starting, self._finished, self._pending = [], [], []
        self._progress.update(len(records))


def _no_files_message(paths: list[Path], files: list[Path]) -> str:
    where = ", ".join(str(path) for path in paths)
    others = ""
    if files:
        others = (
            f" ({len(files)} files of other types)"
            if len(files) > 1
            else " (1 file of another type)"
        )
    kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
    return f"no supported files found in {where}{others}; supported: {kinds}"


def ingest_paths(
    vectors: VectorStore,
    embedder,
    settings: ChunkSettings,
    paths: list[Path | str],
    text_field: str = "text",
    progress: bool = True,
    batch_chunks: int = WRITE_BATCH_CHUNKS,
) -> IngestReport:
    """Bring ``vectors`` in step with files and folders (the caller holds the store's lock).

    Args:
        vectors: the store's chunks and documents.
        embedder: the store's embedding model.
        settings: the store's chunk settings.
        paths: files and/or folders.
        text_field: the text field of ``.jsonl`` files.
        progress: show chunks committed on stderr.
        batch_chunks: chunks embedded and committed at a time.

    Raises:
        DataError: a path does not exist, or the paths hold no supported file (and nothing
            ingested from them before has disappeared).
    """
    start = time.perf_counter()
    files = [file for file, _ in iter_files(paths)]  # DataError for a missing path
    resolved = [Path(path).expanduser().resolve() for path in paths]
    roots = [path for path in resolved if path.is_dir()]
    existing = vectors.documents()
    vanished = [
        record
        for record in existing.values()
        if any(Path(record.source).is_relative_to(root) for root in roots)
        and not Path(record.source).exists()
    ]
    if not vanished and not any(file.suffix.lower() in SUPPORTED_SUFFIXES for file in files):
        raise DataError(_no_files_message(resolved, files))

    report = IngestReport()
    shown = Progress("ingest", unit="chunk", enabled=progress, interval_s=PROGRESS_INTERVAL_S)
    batches = ChunkBatches(vectors, embedder, batch_chunks, shown)
    try:
        for index, file in enumerate(files, start=1):
            shown.set_postfix({"file": f"{index}/{len(files)} {file.name}"})
            parsed = parse_file(file, text_field=text_field)
            if isinstance(parsed, SkippedFile):
                report.skipped += 1
                report.warnings.append(f"skipped {parsed.path}: {parsed.reason}")
                continue
            report.warnings.extend(parsed.warnings)
            known = existing.get(document_id(parsed.source))
            if known is not None and known.content_hash == parsed.content_hash:
                report.unchanged += 1
                continue
            report.chunks += batches.write(
                parsed, chunk_document(parsed, embedder.tokenizer, settings)
            )
            if known is None:
                report.added += 1
            else:
                report.updated += 1
        batches.close()
    finally:
        shown.close()
    remove_documents(vectors, vanished)
    report.removed = len(vanished)
    vectors.optimize()
    report.seconds = time.perf_counter() - start
    return report
