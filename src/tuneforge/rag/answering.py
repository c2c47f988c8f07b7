"""Answering from retrieved sources: a prompt with numbered sources, citations, refusals.

The prompt is short on purpose: small models (the bundled 135M one) follow a brief instruction
with the sources right before the question far better than a long one. When no retrieved chunk
is similar enough to the question, no model is called and the answer is a refusal; the model is
also told to say it does not know when the sources lack the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuneforge.generation import GenerationSettings, Reply, generate
from tuneforge.rag.retrieval import Hit

REFUSAL = "I don't know."
DEFAULT_SYSTEM = (
    "Answer the question using only the numbered sources. Cite the source you used, like [1]. "
    f'If the sources do not contain the answer, say "{REFUSAL}"'
)
# Cosine similarity (all-MiniLM-L6-v2) under which a chunk is taken as unrelated to the question:
# on the bundled question set the best hit scores 0.37-0.92 for answerable questions and 0.10 for
# an off-topic one. Questions on topic whose answer is absent score higher: the model must refuse.
MIN_SIMILARITY = 0.3
_REFUSAL_PATTERN = re.compile(r"^\W*i (don'?t|do not) know", re.IGNORECASE)


@dataclass
class RagAnswer:
    """An answer and what it rests on.

    Attributes:
        text: the answer (citing sources as [n], n indexing ``hits`` from 1).
        hits: the sources shown to the model, in prompt order.
        refused: True when retrieval found nothing relevant or the model said it does not know.
        reply: the generation details (token counts, seconds); None when no model was called.
    """

    text: str
    hits: list[Hit]
    refused: bool
    reply: Reply | None = None


def format_sources(hits: list[Hit]) -> str:
    """Sources as numbered blocks: ``[n] title (location)`` then the chunk's text."""
    blocks = []
    for n, hit in enumerate(hits, start=1):
        header = f"[{n}] {hit.title} ({hit.location})" if hit.title else f"[{n}] ({hit.location})"
        blocks.append(f"{header}\n{hit.text.strip()}")
    return "\n\n".join(blocks)


def build_rag_messages(question: str, hits: list[Hit], system: str | None = None) -> list[dict]:
    """Chat messages asking ``question`` over numbered sources ``[1]..[n]``.

    Args:
        question: the user's question.
        hits: the retrieved chunks, best first; hit i becomes source [i+1].
        system: replaces the default instruction (cite [n]; say "I don't know." otherwise).
    """
    user = f"Sources:\n\n{format_sources(hits)}\n\nQuestion: {question.strip()}"
    return [
        {"role": "system", "content": system or DEFAULT_SYSTEM},
        {"role": "user", "content": user},
    ]


def cited_sources(text: str, count: int) -> list[int]:
    """Source numbers ``[n]`` cited in ``text`` (1-based, valid ones only, in first-cited order)."""
    numbers = []
    for match in re.finditer(r"\[(\d+)\]", text):
        n = int(match.group(1))
        if 1 <= n <= count and n not in numbers:
            numbers.append(n)
    return numbers


def is_refusal(text: str) -> bool:
    """Whether a reply says it does not know."""
    return bool(_REFUSAL_PATTERN.match(text.strip()))


def answer(
    question: str,
    store,
    model,
    tokenizer,
    top_k: int = 5,
    settings: GenerationSettings | None = None,
    mode: str = "hybrid",
    min_similarity: float = MIN_SIMILARITY,
    system: str | None = None,
    source_filter: str | None = None,
    on_text=None,
) -> RagAnswer:
    """Retrieve sources for ``question`` from ``store`` and generate a cited answer.

    Args:
        question: the user's question.
        store: a ``RagStore``.
        model: a causal LM (base or base + adapter).
        tokenizer: its tokenizer.
        top_k: sources to put in the prompt.
        settings: generation settings (default: greedy, 256 new tokens).
        mode: retrieval mode: ``dense``, ``bm25`` or ``hybrid``.
        min_similarity: refuse without calling the model when no hit's cosine similarity to the
            question reaches this.
        system: replaces the default instruction.
        source_filter: only search this file, or files under this folder.
        on_text: called with each piece of the answer as it is generated (streaming).
    """
    hits = store.search(question, top_k=top_k, mode=mode, source_filter=source_filter)
    if not hits or max(hit.similarity for hit in hits) < min_similarity:
        return RagAnswer(text=REFUSAL, hits=[], refused=True)
    messages = build_rag_messages(question, hits, system)
    reply = generate(model, tokenizer, messages, settings, on_text=on_text)
    text = reply.text.strip()
    return RagAnswer(text=text, hits=hits, refused=is_refusal(text), reply=reply)
