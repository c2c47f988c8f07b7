"""``RagStore``: a store folder; documents in, searchable chunks out, in step with the files.

Layout of a store folder::

    store.json   the embedding model (name, identity, dimension) and chunk settings; written
                 last when a store is created, so a folder with it holds a whole store
    .lock        a file lock held by every write (create, ingest, remove): writers take turns
    lance/       the LanceDB tables (chunks with vectors, documents with content hashes), unless
                 another ``VectorStore`` is plugged in

Only writers take the lock. Readers (``search``, ``stats``, ``documents``; ``rag search``,
``rag stats``, ``serve --store``) open a store while an ingest runs and read its last committed
version. Ingesting is incremental (``ingesting.py``): a file whose content hash is unchanged is
skipped, a changed one has its chunks replaced, and files that disappeared from an ingested
folder are removed, so repeated ingests never duplicate rows and never keep stale facts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tuneforge.atomic import write_json
from tuneforge.errors import StoreError
from tuneforge.rag.chunking import ChunkSettings
from tuneforge.rag.embedding import DEFAULT_EMBEDDING, Embedder, load_embedder
from tuneforge.rag.ingesting import (
    WRITE_BATCH_CHUNKS,
    IngestReport,
    ingest_paths,
    remove_documents,
)
from tuneforge.rag.retrieval import Hit, Reranker, check_query, retrieve
from tuneforge.rag.vector_store import ANN_MIN_ROWS, DocumentRecord, LanceVectorStore, VectorStore

STORE_FORMAT = 1
LOCK_TIMEOUT_S = 600.0
# What a folder may hold before it is a store: the lock, and tables of an interrupted creation.
_CREATION_LEFTOVERS = {".lock", "lance"}


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
class StoreStats:
    """A store at a glance: counts, embedding model, chunk settings, size on disk (bytes).

    ``incomplete`` counts documents whose ingest was interrupted (included in ``documents``);
    the next ingest of their files writes them again.
    """

    folder: str
    documents: int
    incomplete: int
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
        self._embedder = embedder
        self._reranker_ref = reranker
        self._reranker: Reranker | None = None
        self._lock = FileLock(str(self.folder / ".lock"), timeout=LOCK_TIMEOUT_S)
        if self._meta_path.exists():
            # A reader takes no lock: store.json is written last (and atomically) at creation.
            self._open_existing(embedding_model, chunk_size, overlap)
        elif not create:
            raise StoreError(
                f"{self.folder}: no RAG store here (no store.json); create one with "
                f"`tuneforge rag ingest --store {folder} DOCS`"
            )
        else:
            vector_store = self._create(
                embedding_model, chunk_size, overlap, ann_min_rows, vector_store
            )
        if vector_store is None:
            vector_store = LanceVectorStore(
                self.folder / "lance", self.meta.dimension, ann_min_rows
            )
        self._vectors = vector_store

    def _create(
        self,
        embedding_model: str | None,
        chunk_size: int | None,
        overlap: int | None,
        ann_min_rows: int,
        vector_store: VectorStore | None,
    ) -> VectorStore | None:
        """Create the store under the writers' lock, or open it if another process just did.

        Returns:
            the vector store made for it (``vector_store`` when one was given; None when the
            store existed already and its LanceDB tables are yet to be opened).
        """
        self._check_creatable()
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._meta_path.exists():
                self._open_existing(embedding_model, chunk_size, overlap)
                return vector_store
            self._check_creatable()
            self.meta = self._new_meta(embedding_model, chunk_size, overlap)
            # The tables first, store.json last: a folder with store.json holds a whole store.
            if vector_store is None:
                vector_store = LanceVectorStore(
                    self.folder / "lance", self.meta.dimension, ann_min_rows, create=True
                )
            write_json(self._meta_path, asdict(self.meta))
            return vector_store

    def _open_existing(
        self, embedding_model: str | None, chunk_size: int | None, overlap: int | None
    ) -> None:
        self.meta = self._read_meta()
        self._check_request(embedding_model, chunk_size, overlap)

    def _check_creatable(self) -> None:
        """A new store goes into a missing or empty folder (or one left by a creation)."""
        if self.folder.exists() and any(
            entry.name not in _CREATION_LEFTOVERS for entry in self.folder.iterdir()
        ):
            raise StoreError(
                f"{self.folder}: folder is not empty and is not a RAG store (no store.json); "
                "pick an empty or new folder"
            )

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
        self,
        paths: list[Path | str] | Path | str,
        text_field: str = "text",
        progress: bool = True,
        batch_chunks: int = WRITE_BATCH_CHUNKS,
    ) -> IngestReport:
        """Bring the store in step with files and folders, committing as it goes.

        New files are added, changed ones replaced, unchanged ones skipped (by content hash),
        and documents whose file disappeared from an ingested folder are removed. Chunks are
        embedded and committed ``batch_chunks`` at a time, so memory stays bounded and a kill
        loses the batch in flight at most (see ``tuneforge.rag.ingesting``).

        Args:
            paths: files and/or folders.
            text_field: the text field of ``.jsonl`` files.
            progress: show the chunks committed on stderr (a bar on a terminal, else a line
                every 10 s).
            batch_chunks: chunks embedded and committed at a time.

        Returns:
            the counts; ``warnings`` lists skipped files and altered parts of files (this is
            the only place they are reported).

        Raises:
            DataError: a path does not exist, or the paths hold no supported file.
        """
        if isinstance(paths, str | Path):
            paths = [paths]
        embedder = self.embedder
        with self._lock:
            return ingest_paths(
                self._vectors,
                embedder,
                self.chunk_settings,
                paths,
                text_field=text_field,
                progress=progress,
                batch_chunks=batch_chunks,
            )

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
            remove_documents(self._vectors, matched)
            self._vectors.optimize()
        return matched

    # -- reading --------------------------------------------------------------------------

    def documents(self) -> list[DocumentRecord]:
        """Every stored document, sorted by source path."""
        return sorted(self._vectors.documents().values(), key=lambda record: record.source)

    def stats(self) -> StoreStats:
        """Counts, embedding model, chunk settings and size on disk."""
        disk = folder_bytes(self.folder)
        documents = self._vectors.documents().values()
        return StoreStats(
            folder=str(self.folder),
            documents=len(documents),
            incomplete=sum(not record.complete for record in documents),
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

        Raises:
            ConfigError: the query is empty or only whitespace, or ``mode``/``top_k`` is
                invalid.
        """
        check_query(query)
        vector = self.embedder.encode([query])[0]
        prefix = str(Path(source_filter).expanduser().resolve()) if source_filter else None
        if self._reranker_ref and self._reranker is None:
            self._reranker = Reranker(self._reranker_ref)
        return retrieve(self._vectors, vector, query, top_k, mode, prefix, self._reranker)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``, counted while an ingest may be writing there.

    A concurrent writer (another ``rag ingest``) creates and renames temporary files; one that
    vanishes between listing and ``stat`` is simply not counted, instead of failing the read.
    """
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total
