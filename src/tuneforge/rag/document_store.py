"""``RagStore``: a store folder; documents in, searchable chunks out, in step with the files.

Layout of a store folder::

    store.json   the embedding model (name, identity, dimension) and chunk settings
    .lock        a file lock held by every write (ingest, remove), so writers take turns
    lance/       the LanceDB tables (chunks with vectors, documents with content hashes), unless
                 another ``VectorStore`` is plugged in

Ingesting is incremental: a file whose content hash is unchanged is skipped, a changed one has
its chunks replaced, and files that disappeared from an ingested folder are removed, so repeated
ingests never duplicate rows and never keep stale facts.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.atomic import write_json
from tuneforge.errors import StoreError
from tuneforge.rag.chunking import ChunkSettings, chunk_document
from tuneforge.rag.embedding import DEFAULT_EMBEDDING, Embedder, load_embedder
from tuneforge.rag.parsing import Document, SkippedFile, document_id, iter_files, parse_file
from tuneforge.rag.retrieval import Hit, Reranker, retrieve
from tuneforge.rag.vector_store import (
    ANN_MIN_ROWS,
    ChunkRecord,
    DocumentRecord,
    LanceVectorStore,
    VectorStore,
)

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
LOCK_TIMEOUT_S = 600.0
# Chunks embedded and written per batch: bounds memory and the number of table versions.
WRITE_BATCH_CHUNKS = 2048


@dataclass
class StoreMeta:
    """What ``store.json`` records; a store only accepts queries embedded the same way."""

    embedding_model: str
    embedding_source: str
    embedding_identity: str
    dimension: int
    chunk_size: int
    overlap: int
    created_at: str
    format: int = STORE_FORMAT


@dataclass
class IngestReport:
    """What one ingest did (counts of documents, except ``chunks``).

    Attributes:
        added: new documents.
        updated: documents whose content changed (their chunks were replaced).
        unchanged: documents skipped because their content hash matched.
        removed: documents dropped because their file disappeared from an ingested folder.
        skipped: files that could not be used (binary, unreadable, unsupported, empty).
        chunks: chunks embedded and written.
        warnings: one line per skipped file or skipped part of a file.
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


@dataclass
class StoreStats:
    """A store at a glance: counts, embedding model, chunk settings, size on disk (bytes)."""

    folder: str
    documents: int
    chunks: int
    embedding_model: str
    embedding_identity: str
    dimension: int
    chunk_size: int
    overlap: int
    disk_bytes: int


class RagStore:
    """Open or create a store folder.

    Args:
        folder: the store folder; created when missing (unless ``create`` is False).
        embedding_model: ``default`` (bundled all-MiniLM-L6-v2), a sentence-transformers folder
            or hub id. For a new store, the model it is built with; for an existing store, None
            means "the store's own model" and anything else must be that same model.
        chunk_size: tokens per chunk for a new store (default 160); must match an existing one.
        overlap: overlapping tokens between chunks for a new store (default 32).
        embedder: an already loaded Embedder to use (saves loading one per store).
        reranker: a cross-encoder folder or hub id to rerank search results with.
        create: if False, a missing store is an error.
        ann_min_rows: chunk count from which an ANN vector index is built (LanceDB default).
        vector_store: where chunks and vectors live (default: LanceDB in ``<folder>/lance``);
            any :class:`~tuneforge.rag.VectorStore` of the store's embedding dimension.

    Raises:
        StoreError: the folder is not a store, or the embedding model/chunk settings differ
            from the store's.
    """

    def __init__(
        self,
        folder: Path | str,
        embedding_model: str | None = None,
        chunk_size: int | None = None,
        overlap: int | None = None,
        embedder: Embedder | None = None,
        reranker: str | None = None,
        create: bool = True,
        ann_min_rows: int = ANN_MIN_ROWS,
        vector_store: VectorStore | None = None,
    ) -> None:
        from filelock import FileLock

        self.folder = Path(folder).expanduser().resolve()
        self._meta_path = self.folder / "store.json"
        if not self._meta_path.exists():
            if not create:
                raise StoreError(
                    f"{self.folder}: no RAG store here (no store.json); create one with "
                    f"`tuneforge rag ingest --store {folder} DOCS`"
                )
            if self.folder.exists() and any(self.folder.iterdir()):
                raise StoreError(
                    f"{self.folder}: folder is not empty and is not a RAG store (no store.json); "
                    "pick an empty or new folder"
                )
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.folder / ".lock"), timeout=LOCK_TIMEOUT_S)
        self._embedder = embedder
        self._reranker_ref = reranker
        self._reranker: Reranker | None = None
        with self._lock:
            if self._meta_path.exists():
                self.meta = self._read_meta()
                self._check_request(embedding_model, chunk_size, overlap)
            else:
                self.meta = self._new_meta(embedding_model, chunk_size, overlap)
                write_json(self._meta_path, asdict(self.meta))
        if vector_store is None:
            vector_store = LanceVectorStore(
                self.folder / "lance", self.meta.dimension, ann_min_rows
            )
        self._vectors = vector_store

    @classmethod
    def open(cls, folder: Path | str, **kwargs) -> RagStore:
        """Open an existing store (a missing one is an error)."""
        return cls(folder, create=False, **kwargs)

    # -- metadata -------------------------------------------------------------------------

    def _read_meta(self) -> StoreMeta:
        try:
            data = json.loads(self._meta_path.read_text(encoding="utf-8"))
            return StoreMeta(**data)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            raise StoreError(
                f"{self._meta_path}: unreadable store metadata ({err}); rebuild the store"
            ) from err

    def _new_meta(self, ref: str | None, chunk_size: int | None, overlap: int | None) -> StoreMeta:
        if self._embedder is None:
            self._embedder = load_embedder(ref or "default")
        embedder = self._embedder
        settings = ChunkSettings(
            chunk_size=chunk_size if chunk_size is not None else ChunkSettings.chunk_size,
            overlap=overlap if overlap is not None else ChunkSettings.overlap,
        )
        if settings.chunk_size > embedder.max_tokens - 2:
            raise StoreError(
                f"chunk_size {settings.chunk_size} exceeds what {embedder.name} embeds "
                f"({embedder.max_tokens} tokens with 2 special ones); use at most "
                f"{embedder.max_tokens - 2}"
            )
        return StoreMeta(
            embedding_model=embedder.name,
            embedding_source=embedder.source,
            embedding_identity=embedder.identity,
            dimension=embedder.dimension,
            chunk_size=settings.chunk_size,
            overlap=settings.overlap,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    def _check_request(self, ref: str | None, chunk_size: int | None, overlap: int | None) -> None:
        for name, asked, stored in (
            ("chunk_size", chunk_size, self.meta.chunk_size),
            ("overlap", overlap, self.meta.overlap),
        ):
            if asked is not None and asked != stored:
                raise StoreError(
                    f"{self.folder}: store was built with {name} {stored}, not {asked}; "
                    "drop the option or ingest into a new store"
                )
        if self._embedder is None and ref is not None:
            self._embedder = load_embedder(ref)
        if self._embedder is not None:
            self._check_embedder(self._embedder)

    def _check_embedder(self, embedder: Embedder) -> None:
        if embedder.identity != self.meta.embedding_identity:
            raise StoreError(
                f"{self.folder}: store was built with embedding model {self.meta.embedding_model} "
                f"({self.meta.embedding_identity[:19]}), but this uses {embedder.name} "
                f"({embedder.identity[:19]}); query with the store's model or re-ingest into a "
                "new store"
            )

    @property
    def embedder(self) -> Embedder:
        """The store's embedding model, loaded on first use."""
        if self._embedder is None:
            source = self.meta.embedding_source
            if not Path(source).exists() and self.meta.embedding_model == DEFAULT_EMBEDDING:
                source = "default"  # the bundled package moved (another venv): same weights
            self._embedder = load_embedder(source)
            self._check_embedder(self._embedder)
        return self._embedder

    @property
    def chunk_settings(self) -> ChunkSettings:
        return ChunkSettings(self.meta.chunk_size, self.meta.overlap)

    @property
    def vectors(self) -> VectorStore:
        """The underlying ``VectorStore``."""
        return self._vectors

    # -- writing --------------------------------------------------------------------------

    def ingest(
        self, paths: list[Path | str] | Path | str, text_field: str = "text", progress: bool = True
    ) -> IngestReport:
        """Bring the store in step with files and folders.

        New files are added, changed ones replaced, unchanged ones skipped (by content hash),
        and documents whose file disappeared from an ingested folder are removed.

        Args:
            paths: files and/or folders.
            text_field: the text field of ``.jsonl`` files.
            progress: show a progress bar while embedding.

        Raises:
            DataError: a path does not exist.
        """
        start = time.perf_counter()
        if isinstance(paths, str | Path):
            paths = [paths]
        report = IngestReport()
        embedder = self.embedder
        with self._lock:
            existing = self._vectors.documents()
            pending: list[tuple[Document, str]] = []  # (document, "added"/"updated")
            roots: set[Path] = set()
            for file, root in iter_files(paths):
                if root is not None:
                    roots.add(root)
                parsed = parse_file(file, text_field=text_field)
                if isinstance(parsed, SkippedFile):
                    report.skipped += 1
                    report.warnings.append(f"skipped {parsed.path}: {parsed.reason}")
                    continue
                report.warnings.extend(parsed.warnings)
                known = existing.get(document_id(parsed.source))
                if known is not None and known.content_hash == parsed.content_hash:
                    report.unchanged += 1
                else:
                    pending.append((parsed, "added" if known is None else "updated"))
            report.chunks = self._write(pending, embedder, progress)
            for _, kind in pending:
                setattr(report, kind, getattr(report, kind) + 1)
            for record in existing.values():
                source = Path(record.source)
                if any(source.is_relative_to(root) for root in roots) and not source.exists():
                    self._vectors.delete_document(record.doc_id)
                    report.removed += 1
            self._vectors.optimize()
        for line in report.warnings:
            logger.warning(line)
        report.seconds = time.perf_counter() - start
        return report

    def _write(
        self, pending: list[tuple[Document, str]], embedder: Embedder, progress: bool
    ) -> int:
        """Chunk, embed (in batches) and store ``pending`` documents; returns chunks written."""
        from tqdm import tqdm

        settings = self.chunk_settings
        chunked = [(doc, chunk_document(doc, embedder.tokenizer, settings)) for doc, _ in pending]
        total = sum(len(chunks) for _, chunks in chunked)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        bar = tqdm(total=total, unit="chunk", desc="embedding", disable=not progress)
        batch: list[tuple[Document, list]] = []
        with bar:
            for i, item in enumerate(chunked):
                batch.append(item)
                size = sum(len(chunks) for _, chunks in batch)
                if size >= WRITE_BATCH_CHUNKS or i == len(chunked) - 1:
                    self._write_batch(batch, embedder, now)
                    bar.update(size)
                    batch = []
        return total

    def _write_batch(
        self, batch: list[tuple[Document, list]], embedder: Embedder, now: str
    ) -> None:
        texts = [f"{doc.title}\n{chunk.text}" for doc, chunks in batch for chunk in chunks]
        vectors = embedder.encode(texts)
        items, row = [], 0
        for doc, chunks in batch:
            doc_id = document_id(doc.source)
            records = []
            for n, chunk in enumerate(chunks):
                records.append(
                    ChunkRecord(
                        chunk_id=f"{doc_id}:{n}",
                        doc_id=doc_id,
                        text=chunk.text,
                        search_text=texts[row],
                        source=doc.source,
                        title=doc.title,
                        location=chunk.location,
                        start=chunk.start,
                        end=chunk.end,
                        vector=vectors[row],
                    )
                )
                row += 1
            record = DocumentRecord(
                doc_id, doc.source, doc.title, doc.content_hash, len(chunks), now
            )
            items.append((record, records))
        self._vectors.replace_documents(items)

    def remove(self, target: str | Path) -> list[DocumentRecord]:
        """Remove a document by id or path, or every document under a folder.

        Returns:
            the removed documents.

        Raises:
            StoreError: nothing in the store matches.
        """
        with self._lock:
            documents = self._vectors.documents()
            if str(target) in documents:
                matched = [documents[str(target)]]
            else:
                path = Path(target).expanduser().resolve()
                matched = [
                    record
                    for record in documents.values()
                    if Path(record.source) == path or Path(record.source).is_relative_to(path)
                ]
            if not matched:
                raise StoreError(
                    f"{target}: no document with this id or path in {self.folder}; "
                    f"`tuneforge rag stats --store {self.folder} --documents` lists them"
                )
            for record in matched:
                self._vectors.delete_document(record.doc_id)
            self._vectors.optimize()
        return matched

    # -- reading --------------------------------------------------------------------------

    def documents(self) -> list[DocumentRecord]:
        """Every stored document, sorted by source path."""
        return sorted(self._vectors.documents().values(), key=lambda record: record.source)

    def stats(self) -> StoreStats:
        """Counts, embedding model, chunk settings and size on disk."""
        disk = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        return StoreStats(
            folder=str(self.folder),
            documents=len(self._vectors.documents()),
            chunks=self._vectors.count_chunks(),
            embedding_model=self.meta.embedding_model,
            embedding_identity=self.meta.embedding_identity,
            dimension=self.meta.dimension,
            chunk_size=self.meta.chunk_size,
            overlap=self.meta.overlap,
            disk_bytes=disk,
        )

    def search(
        self,
        query: str,
        top_k: int = 5,
        mode: str = "hybrid",
        source_filter: str | Path | None = None,
    ) -> list[Hit]:
        """The ``top_k`` chunks that best match ``query``.

        Args:
            query: the question or search text.
            top_k: hits to return.
            mode: ``dense`` (embeddings), ``bm25`` (full text) or ``hybrid`` (both, fused).
            source_filter: only chunks from this file, or from files under this folder.
        """
        vector = self.embedder.encode([query])[0]
        prefix = str(Path(source_filter).expanduser().resolve()) if source_filter else None
        if self._reranker_ref and self._reranker is None:
            self._reranker = Reranker(self._reranker_ref)
        return retrieve(self._vectors, vector, query, top_k, mode, prefix, self._reranker)
