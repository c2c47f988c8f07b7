"""Answering from a store: retrieve, apply the relevance rule, build the prompt, generate.

The prompt and the rule come from :mod:`tuneforge.rag.prompting`, the refusal detector from
:mod:`tuneforge.rag.replies`; this module only joins them to a store and a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuneforge.rag.prompting import DEFAULT_PROMPT_FORMAT, MIN_SIMILARITY, RagPrompt, rag_prompt
from tuneforge.rag.replies import REFUSAL, is_refusal
from tuneforge.rag.retrieval import Hit

if TYPE_CHECKING:
    from tuneforge.generation import GenerationSettings, Reply


@dataclass
class RagAnswer:
    """An answer and what it rests on.

    Attributes:
        text: the answer (citing sources as [n], n indexing ``hits`` from 1).
        hits: the sources shown to the model, in prompt order.
        refused: True when retrieval found nothing relevant or the reply declines to answer
            (:func:`tuneforge.rag.is_refusal`).
        reply: the generation details (token counts, seconds); None when no model was called.
        messages: the prompt the model was given; None when no model was called.
    """

    text: str
    hits: list[Hit]
    refused: bool
    reply: Reply | None = None
    messages: list[dict] | None = None


def answer(
    question: str,
    store,
    model,
    tokenizer,
    top_k: int = 5,
    settings: GenerationSettings | None = None,
    mode: str = "hybrid",
    min_similarity: float = MIN_SIMILARITY,
    source_filter: str | None = None,
    on_text=None,
    *,
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    client_system: str | None = None,
    history: list[dict] | None = None,
) -> RagAnswer:
    """Retrieve sources for ``question`` from ``store`` and generate a cited answer.

    When no hit reaches ``min_similarity`` and the format answers from sources, the answer is
    the house refusal "I don't know." and no model is called.

    Args:
        question: the user's question.
        store: a ``RagStore`` (anything with its ``search``).
        model: a causal LM (base or base + adapter).
        tokenizer: its tokenizer.
        top_k: hits to retrieve (all are shown when the best one is relevant).
        settings: generation settings (default: greedy, 256 new tokens).
        mode: retrieval mode: ``dense``, ``bm25`` or ``hybrid``.
        min_similarity: the relevance threshold on the best hit's cosine similarity.
        source_filter: only search this file, or files under this folder.
        on_text: called with each piece of the answer as it is generated (streaming).
        prompt_format: a name from ``tuneforge.rag.PROMPT_FORMATS``.
        client_system: the caller's own system text, appended to the format's instruction.
        history: earlier turns, kept between the instruction and the question.

    Raises:
        ConfigError: an unknown mode or prompt format, or ``top_k`` < 1.
    """
    from tuneforge.generation import generate

    prompt = retrieve_prompt(
        question,
        store,
        top_k,
        mode,
        min_similarity,
        source_filter,
        prompt_format=prompt_format,
        client_system=client_system,
        history=history,
    )
    reply = (
        None
        if prompt.refused
        else generate(model, tokenizer, prompt.messages, settings, on_text=on_text)
    )
    return answer_from(prompt, reply)


def retrieve_prompt(
    question: str,
    store,
    top_k: int = 5,
    mode: str = "hybrid",
    min_similarity: float = MIN_SIMILARITY,
    source_filter: str | None = None,
    *,
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    client_system: str | None = None,
    history: list[dict] | None = None,
) -> RagPrompt:
    """The first half of :func:`answer`: retrieve and build the prompt (arguments as there).

    Callers that decode many questions together (evaluation) build every prompt with this,
    decode the prompts' ``messages`` in one ``generate_rows`` call, and finish each with
    :func:`answer_from`.
    """
    hits = store.search(question, top_k=top_k, mode=mode, source_filter=source_filter)
    return rag_prompt(
        question,
        hits,
        prompt_format=prompt_format,
        min_similarity=min_similarity,
        client_system=client_system,
        history=history,
    )


def answer_from(prompt: RagPrompt, reply: Reply | None) -> RagAnswer:
    """The second half of :func:`answer`: the answer from the prompt and the model's reply.

    Args:
        prompt: from :func:`retrieve_prompt`.
        reply: the reply to ``prompt.messages``; None when the prompt is refused (no model
            is called then).
    """
    if prompt.refused or reply is None:
        return RagAnswer(text=REFUSAL, hits=[], refused=True)
    text = reply.text.strip()
    return RagAnswer(text, prompt.hits, is_refusal(text), reply, prompt.messages)
