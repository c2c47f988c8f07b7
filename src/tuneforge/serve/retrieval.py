"""RAG on request: ``"rag": {"top_k": 5}`` in a chat request retrieves from the ``--store``.

The last user message is the question; the prompt is ``tuneforge.rag.rag_prompt``, the path
``rag ask`` and eval take: the relevance rule, then the numbered-source prompt ("cite like
[1]", "say I don't know otherwise") with a client's own system message appended to the
instruction and the earlier turns kept between the instruction and the question. When the best
hit is less similar to the question than ``rag.MIN_SIMILARITY``, nothing is relevant: the
retriever returns no sources, and the answer is ``rag.REFUSAL``. The reply's ``sources`` lists
the passages in prompt order: ``[n]`` in the answer is ``sources[n-1]``.

A request for an adapter trained on retrieval prompts (``tuneforge train --store``: its
``rag_prompt.json``, ``tuneforge.rag.raft.trained_prompt``) is asked the way it was trained: its
prompt format and relevance threshold, its system text when the client sends none, and its
``top_k`` and mode when the request does not set them.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tuneforge.serve.errors import ApiError
from tuneforge.serve.schemas import RagOptions, Source


def split_question(messages: list[dict]) -> tuple[str | None, list[dict], str]:
    """(client system text, earlier turns, the question) from template-ready messages.

    Raises:
        ApiError: 400 when the last message is not a non-empty user turn.
    """
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise ApiError(
            400,
            "messages: with 'rag', the last message must be the user's question",
            code="invalid_request",
            param="messages",
        )
    system = "\n\n".join(m["content"] for m in messages[:-1] if m["role"] == "system") or None
    history = [m for m in messages[:-1] if m["role"] != "system"]
    return system, history, messages[-1]["content"]


def make_retriever(search):
    """A retriever (see ``app.Retriever``) over ``search(question, top_k, mode) -> list[Hit]``.

    ``search`` runs in a worker thread (it embeds the question: CPU work off the event loop).
    The retriever returns ``(messages, sources)``, or ``(None, [])`` when no source is relevant
    enough (the rule of ``tuneforge.rag.rag_prompt``): the endpoint then answers
    ``tuneforge.rag.REFUSAL`` without calling the model, as ``rag ask`` does. Its third argument,
    ``trained``, is the requested adapter's prompt record (or None): see the module docstring.
    """
    from tuneforge.rag import DEFAULT_PROMPT_FORMAT, MIN_SIMILARITY, MODES, rag_prompt

    async def retrieve(messages: list[dict], options: RagOptions, trained: dict | None = None):
        trained = trained or {}
        mode = options.mode or trained.get("mode") or "hybrid"
        top_k = options.top_k
        if "top_k" not in options.model_fields_set:
            top_k = trained.get("top_k", top_k)
        if mode not in MODES:
            raise ApiError(
                400,
                f"rag.mode: {mode!r} is not one of {', '.join(MODES)}",
                code="invalid_request",
                param="rag.mode",
            )
        system, history, question = split_question(messages)
        hits = await asyncio.to_thread(search, question, top_k, mode)
        prompt = rag_prompt(
            question,
            hits,
            prompt_format=trained.get("prompt_format", DEFAULT_PROMPT_FORMAT),
            min_similarity=trained.get("min_similarity", MIN_SIMILARITY),
            client_system=system if system is not None else trained.get("client_system"),
            history=history,
        )
        if prompt.refused:
            return None, []
        sources = [
            Source(
                index=n, source=hit.source, location=hit.location, score=hit.score, text=hit.text
            )
            for n, hit in enumerate(prompt.hits, start=1)
        ]
        return prompt.messages, sources

    return retrieve


def build_retriever(folder: Path, embedder=None):
    """A retriever over the RAG store in ``folder`` (opened now; the embedding model loads now).

    Args:
        folder: a RAG store folder (``tuneforge rag ingest``).
        embedder: an already loaded ``rag.Embedder`` of the store's model (default: load it).

    Raises:
        StoreError: the folder is not a RAG store.
    """
    from tuneforge.rag import RagStore

    store = RagStore.open(folder, embedder=embedder)
    _ = store.embedder  # load the embedding model at start, not on the first request
    lock = threading.Lock()  # one search at a time: the store and embedder are shared

    def search(question: str, top_k: int, mode: str):
        with lock:
            return store.search(question, top_k=top_k, mode=mode)

    return make_retriever(search)
