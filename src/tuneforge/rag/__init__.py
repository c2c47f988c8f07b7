"""Retrieval-augmented generation: ingest documents, retrieve by meaning and words, answer with
numbered sources. Facts are updated by re-ingesting a file, not by retraining.

    from tuneforge.rag import RagStore, answer
    store = RagStore("kb-store")            # created on first use, bundled embedding model
    store.ingest(["docs/"])                 # added / updated / unchanged / removed / skipped
                                            # (committed in batches; readers never wait)
    hits = store.search("warranty period", top_k=5, mode="hybrid")
    result = answer("How long is the warranty?", store, model, tokenizer)

Every prompt over retrieved hits is built by :func:`rag_prompt` / :func:`build_rag_messages`
(``prompting.py``); every reply is read by :func:`parse_citations` / :func:`is_refusal`
(``replies.py``).
"""

from tuneforge.rag.answering import RagAnswer, answer, answer_from, retrieve_prompt
from tuneforge.rag.chunking import Chunk, ChunkSettings, chunk_document
from tuneforge.rag.document_store import RagStore, StoreMeta, StoreStats
from tuneforge.rag.embedding import DEFAULT_EMBEDDING, Embedder, load_embedder
from tuneforge.rag.ingesting import IngestReport
from tuneforge.rag.parsing import Document, Section, SkippedFile, parse_file
from tuneforge.rag.prompting import (
    DEFAULT_PROMPT_FORMAT,
    MIN_SIMILARITY,
    PROMPT_FORMATS,
    PromptFormat,
    RagPrompt,
    build_rag_messages,
    rag_prompt,
    relevant_hits,
    resolve_prompt_format,
)
from tuneforge.rag.replies import REFUSAL, is_refusal, parse_citations
from tuneforge.rag.retrieval import MODES, Hit, Reranker, reciprocal_rank_fusion, retrieve
from tuneforge.rag.vector_store import ChunkRecord, DocumentRecord, LanceVectorStore, VectorStore

__all__ = [
    "DEFAULT_EMBEDDING",
    "DEFAULT_PROMPT_FORMAT",
    "MIN_SIMILARITY",
    "MODES",
    "PROMPT_FORMATS",
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
    "PromptFormat",
    "RagAnswer",
    "RagPrompt",
    "RagStore",
    "Reranker",
    "Section",
    "SkippedFile",
    "StoreMeta",
    "StoreStats",
    "VectorStore",
    "answer",
    "answer_from",
    "build_rag_messages",
    "chunk_document",
    "is_refusal",
    "load_embedder",
    "parse_citations",
    "parse_file",
    "rag_prompt",
    "reciprocal_rank_fusion",
    "relevant_hits",
    "resolve_prompt_format",
    "retrieve",
    "retrieve_prompt",
]
