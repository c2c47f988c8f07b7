"""Retrieved hits -> chat messages: the one path every caller takes.

``rag ask`` (:func:`tuneforge.rag.answer`), evaluation, ``compare``, the server's ``rag``
field and retrieval-augmented training (:mod:`tuneforge.rag.raft`) all build their prompt here,
so what a model is trained on and what it sees at inference cannot drift apart. Two steps:

1. :func:`rag_prompt` applies the one rule for "nothing relevant found": when the best hit's
   cosine similarity to the question is below ``min_similarity`` no hit is shown at all (and a
   format that answers from sources refuses: the house "I don't know." without calling a model);
   otherwise every hit is shown, in retrieval order. Hits are kept or dropped together because
   in hybrid mode a BM25 match with a lower cosine similarity can be the one holding the answer.
2. :func:`build_rag_messages` renders a question and a list of hits in a named
   :class:`PromptFormat`. It is pure (no store, no model), so training can build each example's
   prompt from hits it picked itself (the oracle chunk plus distractors, shuffled).

The prompts are short on purpose: small models (the bundled 135M one) follow a brief
instruction with the sources right before the question far better than a long one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tuneforge.errors import ConfigError
from tuneforge.rag.replies import REFUSAL
from tuneforge.rag.retrieval import Hit

# Cosine similarity (all-MiniLM-L6-v2) under which a chunk is taken as unrelated to the question:
# on the bundled question set the best hit scores 0.37-0.92 for answerable questions and 0.10 for
# an off-topic one. Questions on topic whose answer is absent score higher: the model must refuse.
MIN_SIMILARITY = 0.3


@dataclass(frozen=True)
class PromptFormat:
    """How a question and retrieved hits become chat messages.

    The format is named so that what was trained with it (an adapter) can record the name and
    be asked in the same format.

    Attributes:
        name: the format's name (a key of :data:`PROMPT_FORMATS`).
        instruction: the system instruction; a client's own system text is appended to it.
        heading: the line above the hits.
        hits_in: where the hits go: ``user`` (between the heading and the question) or
            ``system`` (after the instruction and the client's system text).
        numbered: show each hit as ``[n] title (location)`` so a reply can cite it as ``[n]``;
            otherwise only its text.
        question_label: written before the question.
        refuse_without_hits: when nothing relevant is found, answer the house refusal without
            calling the model (sources hold the facts: without them there is nothing to say);
            otherwise ask the model without hits (examples only illustrate a form).
    """

    name: str
    instruction: str
    heading: str
    hits_in: Literal["user", "system"]
    numbered: bool
    question_label: str
    refuse_without_hits: bool


SOURCES = PromptFormat(
    name="sources",
    instruction=(
        "Answer the question using only the numbered sources. Cite the source you used, like "
        f'[1]. If the sources do not contain the answer, say "{REFUSAL}"'
    ),
    heading="Sources:",
    hits_in="user",
    numbered=True,
    question_label="Question: ",
    refuse_without_hits=True,
)
"""Answer from numbered sources, citing ``[n]``: ``rag ask``, the server, eval's QA items."""

EXAMPLES = PromptFormat(
    name="examples",
    instruction="",
    heading="Examples of requests and the JSON they become:",
    hits_in="system",
    numbered=False,
    question_label="",
    refuse_without_hits=False,
)
"""Retrieved training examples as demonstrations of a form (compare's JSON task)."""

PROMPT_FORMATS = {fmt.name: fmt for fmt in (SOURCES, EXAMPLES)}
"""Every prompt format, by name."""

DEFAULT_PROMPT_FORMAT = SOURCES.name


def resolve_prompt_format(name: str) -> PromptFormat:
    """The format called ``name``.

    Raises:
        ConfigError: no format has that name.
    """
    try:
        return PROMPT_FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"prompt format {name!r} is unknown; choose one of {', '.join(PROMPT_FORMATS)}"
        ) from None


def relevant_hits(hits: list[Hit], min_similarity: float = MIN_SIMILARITY) -> list[Hit]:
    """The rule for "nothing relevant found": all ``hits`` if the best one's cosine similarity
    reaches ``min_similarity``, else none."""
    if not hits or max(hit.similarity for hit in hits) < min_similarity:
        return []
    return list(hits)


def _render_hits(hits: list[Hit], fmt: PromptFormat) -> str:
    """The heading, then one block per hit (``[n] title (location)`` and text when numbered)."""
    blocks = []
    for n, hit in enumerate(hits, start=1):
        if not fmt.numbered:
            blocks.append(hit.text.strip())
            continue
        header = f"[{n}] {hit.title} ({hit.location})" if hit.title else f"[{n}] ({hit.location})"
        blocks.append(f"{header}\n{hit.text.strip()}")
    return "\n\n".join([fmt.heading, *blocks])


def build_rag_messages(
    question: str,
    hits: list[Hit],
    *,
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    client_system: str | None = None,
    history: list[dict] | None = None,
) -> list[dict]:
    """Chat messages asking ``question`` over ``hits``, in a named format.

    Pure: the same arguments give byte-identical messages, whoever calls it (``rag ask``, eval,
    compare, the server, training).

    Args:
        question: the user's question (surrounding whitespace is dropped).
        hits: the hits to show, in order; with a numbered format hit i is source ``[i+1]``.
            Empty: the prompt shows no hits (no heading either).
        prompt_format: a name from :data:`PROMPT_FORMATS`.
        client_system: the client's own system text, appended to the format's instruction.
        history: earlier turns (``{"role", "content"}``, no system turns), kept between the
            system message and the question.

    Returns:
        ``[system, *history, user]``; the system message is left out when it would be empty.

    Raises:
        ConfigError: an unknown format name.
    """
    fmt = resolve_prompt_format(prompt_format)
    hits_text = _render_hits(hits, fmt) if hits else ""
    system_parts = [fmt.instruction, client_system or ""]
    user_parts = [f"{fmt.question_label}{question.strip()}"]
    if fmt.hits_in == "system":
        system_parts.append(hits_text)
    else:
        user_parts.insert(0, hits_text)
    system = "\n\n".join(part for part in system_parts if part)
    user = "\n\n".join(part for part in user_parts if part)
    head = [{"role": "system", "content": system}] if system else []
    return [*head, *(history or []), {"role": "user", "content": user}]


@dataclass
class RagPrompt:
    """A question's prompt after the relevance rule.

    Attributes:
        question: the question.
        hits: the hits shown, in prompt order (``[n]`` is ``hits[n-1]``); empty when nothing
            relevant was found.
        messages: the chat messages to generate from; None when the answer is the house refusal
            and no model is to be called.
        prompt_format: the format's name.
    """

    question: str
    hits: list[Hit]
    messages: list[dict] | None
    prompt_format: str

    @property
    def refused(self) -> bool:
        """True when the answer is :data:`REFUSAL` without calling a model."""
        return self.messages is None


def rag_prompt(
    question: str,
    hits: list[Hit],
    *,
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    min_similarity: float = MIN_SIMILARITY,
    client_system: str | None = None,
    history: list[dict] | None = None,
) -> RagPrompt:
    """Apply the relevance rule to retrieved ``hits`` and build the prompt.

    Args:
        question: the user's question.
        hits: retrieved hits, best first (e.g. ``RagStore.search``).
        prompt_format: a name from :data:`PROMPT_FORMATS`.
        min_similarity: below this best cosine similarity nothing is relevant (see the module
            docstring for what follows).
        client_system: the client's own system text (appended to the instruction).
        history: earlier turns, kept between the instruction and the question.

    Raises:
        ConfigError: an unknown format name.
    """
    fmt = resolve_prompt_format(prompt_format)
    shown = relevant_hits(hits, min_similarity)
    if not shown and fmt.refuse_without_hits:
        return RagPrompt(question, [], None, fmt.name)
    messages = build_rag_messages(
        question, shown, prompt_format=fmt.name, client_system=client_system, history=history
    )
    return RagPrompt(question, shown, messages, fmt.name)
