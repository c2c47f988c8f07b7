"""Where chunks and their vectors live: a small ``VectorStore`` interface and its LanceDB form.

The interface is what retrieval and ingestion need and nothing more, so a server store
(Postgres + pgvector, Qdrant) plugs into ``RagStore(folder, vector_store=...)``.
``LanceVectorStore`` keeps two tables in an embedded LanceDB folder: ``chunks`` (id, document
id, text, vector, metadata) and ``documents`` (one row per source file with its content hash).
Full-text search uses LanceDB's native BM25 index with ICU word segmentation (so Chinese and
Japanese text is found too); an approximate-nearest-neighbour (IVF-PQ) index is built once a
table is large enough that scanning every vector costs more than the index's small loss of
recall.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from tuneforge.errors import StoreError

# Below this many chunks a brute-force scan is fast (about 10 ms per 10,000 chunks) and exact.
ANN_MIN_ROWS = 50_000
# LanceDB's full-text tokenizer: ICU word boundaries, CJK included. The "simple" tokenizer
# read a whole CJK sentence as one token (and dropped tokens over 40 characters), so bm25
# found none of it; ICU keeps English stemming and stop words as they were.
FTS_TOKENIZER = "icu"


@dataclass
class ChunkRecord:
    """One stored chunk.

    Attributes:
        chunk_id: ``<doc_id>:<n>``.
        doc_id: the document it came from.
        text: the chunk's text, an exact slice of the document.
        search_text: what full-text search indexes: the document title, then ``text``.
        source: absolute path of the source file.
        title: the document's title.
        location: where in the source ("page 2", "§ Pricing", "line 7").
        start: character offset of ``text`` in the document.
        end: one past its last character.
        vector: unit-length embedding (float32).
    """

    chunk_id: str
    doc_id: str
    text: str
    search_text: str
    source: str
    title: str
    location: str
    start: int
    end: int
    vector: np.ndarray


@dataclass
class DocumentRecord:
    """One stored document: its source, title, content hash and chunk count.

    ``content_hash`` is empty while the document's chunks are being written; an ingest killed
    then leaves it so (``complete`` is False), and the next ingest writes the document again.
    """

    doc_id: str
    source: str
    title: str
    content_hash: str
    chunks: int
    ingested_at: str

    @property
    def complete(self) -> bool:
        """Whether every chunk of the document is stored (its last ingest finished)."""
        return bool(self.content_hash)


@runtime_checkable
class VectorStore(Protocol):
    """What a chunk store must do. Scores: cosine similarity (dense) or BM25 (text).

    Each write method is one commit to one table. The order of writes that keeps a store
    consistent when a writer is killed between two of them (a document row is complete only
    once all its chunks are stored) is the caller's: ``tuneforge.rag.ingesting``.
    """

    def documents(self) -> dict[str, DocumentRecord]:
        """Every stored document, by id."""

    def upsert_documents(self, records: list[DocumentRecord]) -> None:
        """Insert document rows, replacing any row with the same ``doc_id``."""

    def delete_documents(self, doc_ids: list[str]) -> None:
        """Remove these document rows, not their chunks (absent ids are no error)."""

    def add_chunks(self, chunks: list[ChunkRecord]) -> None:
        """Append chunks."""

    def delete_chunks(self, doc_ids: list[str]) -> None:
        """Remove every chunk of these documents."""

    def count_chunks(self) -> int:
        """How many chunks are stored."""

    def dense_search(
        self, vector: np.ndarray, limit: int, source_prefix: str | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """Nearest chunks to a unit ``vector``, with cosine similarity, best first."""

    def text_search(
        self, query: str, limit: int, source_prefix: str | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        """Best full-text (BM25) matches for ``query``, with their BM25 score, best first."""

    def optimize(self) -> None:
        """Bring search indexes up to date after writes."""


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ids_where(doc_ids: list[str]) -> str:
    return f"doc_id IN ({', '.join(_sql_string(doc_id) for doc_id in doc_ids)})"


def _source_where(source_prefix: str | None) -> str | None:
    """A filter matching one file, or every file under a folder."""
    if not source_prefix:
        return None
    prefix = source_prefix.rstrip("/")
    return f"(source = {_sql_string(prefix)} OR starts_with(source, {_sql_string(prefix + '/')}))"


_CHUNK_COLUMNS = [
    "chunk_id",
    "doc_id",
    "text",
    "search_text",
    "source",
    "title",
    "location",
    "start",
    "end",
    "vector",
]


def _schemas(dimension: int):
    """The Arrow schemas of the ``chunks`` and ``documents`` tables."""
    import pyarrow as pa

    chunks = pa.schema(
        [
            ("chunk_id", pa.string()),
            ("doc_id", pa.string()),
            ("text", pa.string()),
            ("search_text", pa.string()),
            ("source", pa.string()),
            ("title", pa.string()),
            ("location", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("vector", pa.list_(pa.float32(), dimension)),
        ]
    )
    documents = pa.schema(
        [
            ("doc_id", pa.string()),
            ("source", pa.string()),
            ("title", pa.string()),
            ("content_hash", pa.string()),
            ("chunks", pa.int64()),
            ("ingested_at", pa.string()),
        ]
    )
    return chunks, documents


class LanceVectorStore:
    """A ``VectorStore`` in an embedded LanceDB folder.

    Opening writes nothing, so readers work while a writer commits: every read sees the last
    committed table versions (LanceDB tables are multi-version).

    Args:
        folder: the LanceDB folder.
        dimension: embedding length (floats); fixes the ``vector`` column's type.
        ann_min_rows: build an ANN index once the chunk table holds this many rows.
        create: create the tables and the full-text index when missing (a store's creator
            does this once, under the store's lock).

    Raises:
        StoreError: the tables are missing (and ``create`` is False), or their vectors have
            another dimension.
    """

    def __init__(
        self,
        folder: Path,
        dimension: int,
        ann_min_rows: int = ANN_MIN_ROWS,
        create: bool = False,
    ) -> None:
        import lancedb

        self.folder = folder
        self.dimension = dimension
        self.ann_min_rows = ann_min_rows
        # Interval 0: every read checks for newer table versions, so a store object sees what
        # other processes (or other store objects) wrote since it was opened.
        self._db = lancedb.connect(str(folder), read_consistency_interval=timedelta(0))
        if create:
            chunk_schema, document_schema = _schemas(dimension)
            self._chunks = self._db.create_table("chunks", schema=chunk_schema, exist_ok=True)
            self._documents = self._db.create_table(
                "documents", schema=document_schema, exist_ok=True
            )
            self.ensure_text_index()
        else:
            try:
                self._chunks = self._db.open_table("chunks")
                self._documents = self._db.open_table("documents")
            except ValueError as err:  # LanceDB: "Table 'chunks' was not found"
                raise StoreError(
                    f"{folder}: the store's tables are missing ({err}); rebuild the store"
                ) from err
        stored = self._chunks.schema.field("vector").type.list_size
        if stored != dimension:
            raise StoreError(
                f"{folder}: the store's vectors have {stored} dimensions but the embedding model "
                f"gives {dimension}; use the store's own embedding model"
            )

    def documents(self) -> dict[str, DocumentRecord]:
        rows = self._documents.to_arrow().to_pylist()
        return {row["doc_id"]: DocumentRecord(**row) for row in rows}

    def upsert_documents(self, records: list[DocumentRecord]) -> None:
        if records:
            (
                self._documents.merge_insert("doc_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute([asdict(record) for record in records])
            )

    def delete_documents(self, doc_ids: list[str]) -> None:
        if doc_ids:
            self._documents.delete(_ids_where(doc_ids))

    def add_chunks(self, chunks: list[ChunkRecord]) -> None:
        if chunks:
            self._chunks.add(self._chunk_table(chunks))

    def delete_chunks(self, doc_ids: list[str]) -> None:
        if doc_ids:
            self._chunks.delete(_ids_where(doc_ids))

    def _chunk_table(self, chunks: list[ChunkRecord]):
        """Chunks as one Arrow table (vectors as a fixed-size list column, no Python floats)."""
        import pyarrow as pa

        columns = {
            name: [getattr(chunk, name) for chunk in chunks]
            for name in _CHUNK_COLUMNS
            if name != "vector"
        }
        flat = np.stack([chunk.vector for chunk in chunks]).astype(np.float32).reshape(-1)
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), self.dimension)
        return pa.table(columns, schema=self._chunks.schema)

    def count_chunks(self) -> int:
        return self._chunks.count_rows()

    def _records(self, rows: list[dict], score_key: str) -> list[tuple[ChunkRecord, float]]:
        results = []
        for row in rows:
            score = float(row.pop(score_key))
            record = ChunkRecord(**{key: row[key] for key in _CHUNK_COLUMNS})
            record.vector = np.asarray(record.vector, dtype=np.float32)
            results.append((record, 1.0 - score if score_key == "_distance" else score))
        return results

    def dense_search(
        self, vector: np.ndarray, limit: int, source_prefix: str | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        query = (
            self._chunks.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector")
            .distance_type("cosine")
            .select([*_CHUNK_COLUMNS, "_distance"])
            .limit(limit)
        )
        if self._has_index("vector"):
            # IVF-PQ distances are approximate: re-rank 4x the candidates by exact distance.
            query = query.nprobes(32).refine_factor(4)
        where = _source_where(source_prefix)
        if where:
            query = query.where(where, prefilter=True)
        return self._records(query.to_list(), "_distance")

    def text_search(
        self, query: str, limit: int, source_prefix: str | None = None
    ) -> list[tuple[ChunkRecord, float]]:
        if not query.strip() or self.count_chunks() == 0:
            return []
        if not self._has_index("search_text"):
            # Readers never write; only a store made by an older version can lack the index.
            raise StoreError(
                f"{self.folder}: this store has no full-text index yet; run `tuneforge rag "
                "ingest` on it once (any path) to build it"
            )
        search = (
            self._chunks.search(query, query_type="fts", fts_columns="search_text")
            .select([*_CHUNK_COLUMNS, "_score"])
            .limit(limit)
        )
        where = _source_where(source_prefix)
        if where:
            search = search.where(where, prefilter=True)
        return self._records(search.to_list(), "_score")

    def _has_index(self, column: str) -> bool:
        return any(column in index.columns for index in self._chunks.list_indices())

    def ensure_text_index(self) -> None:
        """Create the full-text index, or rebuild one made with another tokenizer (a write).

        Rows added after the index is built are searched too (unindexed) until ``optimize``
        folds them in, so the index is made once, when the table is created.
        """
        from lancedb.index import FTS

        for index in self._chunks.list_indices():
            if "search_text" in index.columns:
                details = getattr(index, "index_details", None) or {}
                if details.get("base_tokenizer") == FTS_TOKENIZER:
                    return
        self._chunks.create_index(
            "search_text", config=FTS(base_tokenizer=FTS_TOKENIZER), replace=True
        )

    def optimize(self) -> None:
        self.ensure_text_index()
        rows = self.count_chunks()
        if rows >= self.ann_min_rows and not self._has_index("vector"):
            from lancedb.index import IvfPq

            # ~sqrt(rows) partitions; 8-dimension PQ sub-vectors (384 -> 48 codes).
            partitions = max(16, int(rows**0.5))
            sub_vectors = self.dimension // 8 if self.dimension % 8 == 0 else None
            self._chunks.create_index(
                "vector",
                config=IvfPq(
                    distance_type="cosine",
                    num_partitions=partitions,
                    num_sub_vectors=sub_vectors,
                ),
            )
        # Folds new rows into the indexes and compacts small fragments left by many writes.
        self._chunks.optimize()
        self._documents.optimize()
