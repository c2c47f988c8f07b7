"""Retrieval-augmented generation: ingest documents, retrieve by meaning and words, answer with
numbered sources. Facts are updated by re-ingesting a file, not by retraining.

    from tuneforge.rag import RagStore, answer
    store = RagStore("kb-store")            # created on first use, bundled embedding model
    store.ingest(["docs/"])                 # added / updated / unchanged / removed / skipped
    hits = store.search("warranty period", top_k=5, mode="hybrid")
    result = answer("How long is the warranty?", store, model, tokenizer)
"""

from tuneforge.rag.answering import (
    DEFAULT_SYSTEM,
    MIN_SIMILARITY,
    REFUSAL,
    RagAnswer,
    answer,
    build_rag_messages,
    cited_sources,
    is_refusal,
)
from tuneforge.rag.chunking import Chunk, ChunkSettings, chunk_document
from tuneforge.rag.embedding import DEFAULT_EMBEDDING, Embedder, load_embedder
from tuneforge.rag.parsing import Document, Section, SkippedFile, parse_file
from tuneforge.rag.rag_store import IngestReport, RagStore, StoreMeta, StoreStats
from tuneforge.rag.retrieval import MODES, Hit, Reranker, reciprocal_rank_fusion, retrieve
from tuneforge.rag.store import ChunkRecord, DocumentRecord, LanceVectorStore, VectorStore

__all__ = [
    "DEFAULT_EMBEDDING",
    "DEFAULT_SYSTEM",
    "MIN_SIMILARITY",
    "MODES",
    "REFUSAL",
    "Chunk",
    "ChunkRecord",
    "ChunkSettings",
    "Document",
    "DocumentRecord",
    "Embedder",
    "Hit",
    "IngestReport",
    "LanceVectorStore",
    "RagAnswer",
    "RagStore",
    "Reranker",
    "Section",
    "SkippedFile",
    "StoreMeta",
    "StoreStats",
    "VectorStore",
    "answer",
    "build_rag_messages",
    "chunk_document",
    "cited_sources",
    "is_refusal",
    "load_embedder",
    "parse_file",
    "reciprocal_rank_fusion",
    "retrieve",
]
