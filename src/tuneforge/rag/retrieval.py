"""Retrieval: dense, full-text (BM25) and hybrid by reciprocal rank fusion, optional reranking.

Hybrid search runs both searches for a few times ``top_k`` candidates each and fuses the two
rankings by reciprocal rank fusion (Cormack, Clarke & Büttcher 2009):
``score(d) = Σ_lists 1 / (k + rank(d))`` with ``k = 60``. Rankings fuse well where raw scores
would not (a cosine similarity and a BM25 score live on different scales).

Every hit also carries its cosine similarity to the query, whatever the mode, so the answering
step can refuse when nothing is close enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuneforge.errors import ConfigError
from tuneforge.rag.vector_store import ChunkRecord, VectorStore

MODES = ("dense", "bm25", "hybrid")
RRF_K = 60


@dataclass
class Hit:
    """One retrieved chunk.

    Attributes:
        text: the chunk's text.
        source: the source file's path.
        location: where in the source ("page 2", "§ Pricing", "line 7").
        score: the ranking score of the mode used: cosine similarity (dense), BM25 (bm25),
            RRF (hybrid) or the cross-encoder's score (reranked).
        chunk_id: the chunk's id in the store.
        doc_id: its document's id.
        title: the document's title.
        similarity: cosine similarity between the query and the chunk, in [-1, 1].
        start: character offset of the chunk in the document's text.
        end: one past its last character.
    """

    text: str
    source: str
    location: str
    score: float
    chunk_id: str
    doc_id: str
    title: str = ""
    similarity: float = 0.0
    start: int = 0
    end: int = 0


def _hit(record: ChunkRecord, score: float, query_vector: np.ndarray) -> Hit:
    return Hit(
        text=record.text,
        source=record.source,
        location=record.location,
        score=float(score),
        chunk_id=record.chunk_id,
        doc_id=record.doc_id,
        title=record.title,
        similarity=float(np.dot(query_vector, record.vector)),
        start=record.start,
        end=record.end,
    )


def reciprocal_rank_fusion(
    rankings: list[list[ChunkRecord]], k: int = RRF_K
) -> list[tuple[ChunkRecord, float]]:
    """Fuse rankings (best first) into one, scored ``Σ 1/(k + rank)`` with ranks from 1."""
    scores: dict[str, float] = {}
    records: dict[str, ChunkRecord] = {}
    for ranking in rankings:
        for rank, record in enumerate(ranking, start=1):
            scores[record.chunk_id] = scores.get(record.chunk_id, 0.0) + 1.0 / (k + rank)
            records.setdefault(record.chunk_id, record)
    order = sorted(scores, key=lambda chunk_id: scores[chunk_id], reverse=True)
    return [(records[chunk_id], scores[chunk_id]) for chunk_id in order]


class Reranker:
    """A sentence-transformers cross-encoder that rescores (query, chunk) pairs.

    Args:
        ref: a cross-encoder folder or hub id (e.g. ``cross-encoder/ms-marco-MiniLM-L6-v2``).
    """

    def __init__(self, ref: str, device: str = "cpu") -> None:
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(ref, device=device)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"reranker {ref!r}: cannot load it ({err}); pass a cross-encoder folder or a "
                "cached hub id"
            ) from err
        self.ref = ref

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        """``hits`` sorted by the cross-encoder's score (which replaces ``Hit.score``)."""
        if not hits:
            return hits
        scores = self.model.predict([(query, hit.text) for hit in hits], show_progress_bar=False)
        for hit, score in zip(hits, np.asarray(scores, dtype=np.float64).reshape(-1), strict=True):
            hit.score = float(score)
        return sorted(hits, key=lambda hit: hit.score, reverse=True)


def check_query(query: str) -> None:
    """Refuse a query with nothing to search for.

    An empty query embeds to an arbitrary vector, so dense search "found" arbitrary chunks.

    Raises:
        ConfigError: ``query`` is empty or only whitespace.
    """
    if not query.strip():
        raise ConfigError(
            f"the query is empty{' (only whitespace)' if query else ''}: give words to search for"
        )


def retrieve(
    store: VectorStore,
    query_vector: np.ndarray,
    query: str,
    top_k: int = 5,
    mode: str = "hybrid",
    source_prefix: str | None = None,
    reranker: Reranker | None = None,
) -> list[Hit]:
    """The ``top_k`` best chunks for ``query``.

    Args:
        store: where the chunks are.
        query_vector: the query's unit embedding (same model as the store's).
        query: the query text (for BM25 and reranking).
        top_k: how many hits to return.
        mode: ``dense``, ``bm25`` or ``hybrid``.
        source_prefix: only chunks from this file, or from files under this folder.
        reranker: if given, rescore a wider candidate set with it and keep the best ``top_k``.

    Raises:
        ConfigError: an empty query, an unknown mode, or ``top_k`` < 1.
    """
    check_query(query)
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    # Fusion and reranking need a deeper pool than top_k to have something to reorder.
    pool = max(4 * top_k, 20) if (mode == "hybrid" or reranker) else top_k
    if mode == "dense":
        ranked = store.dense_search(query_vector, pool, source_prefix)
    elif mode == "bm25":
        ranked = store.text_search(query, pool, source_prefix)
    else:
        dense = store.dense_search(query_vector, pool, source_prefix)
        text = store.text_search(query, pool, source_prefix)
        ranked = reciprocal_rank_fusion([[r for r, _ in dense], [r for r, _ in text]])
    hits = [_hit(record, score, query_vector) for record, score in ranked[:pool]]
    if reranker is not None:
        hits = reranker.rerank(query, hits)
    return hits[:top_k]
