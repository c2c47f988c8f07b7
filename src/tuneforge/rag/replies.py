"""Reading a model's reply: which numbered sources it cites, and whether it declines to answer.

One parser and one detector for every reader: ``rag ask`` (marking cited sources, ``refused``),
evaluation (citation correctness, refusal and hallucination rates) and, through evaluation, the
comparison report, so a reply counts as "cited [2]" or "refused" the same way everywhere.
"""

from __future__ import annotations

import re

REFUSAL = "I don't know."
"""The house refusal: what the system says when the sources lack the answer."""

CITATION_PATTERN = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
"""A citation mark: ``[n]``, ``[n, m]`` or ``[n; m]`` (``[n][m]`` is two marks)."""

_REFUSAL_PHRASES = re.compile(
    r"(i\s+(do\s+not|don'?t|cannot|can'?t)\s+(know|find|answer|say|tell)"
    r"|i'?m\s+not\s+(sure|aware|able)"
    r"|i\s+am\s+not\s+(sure|aware|able)"
    r"|(cannot|can'?t|unable\s+to)\s+(be\s+)?(answer|determine|find)"
    r"|no\s+(information|mention|answer|data|record)"
    r"|not\s+(mentioned|stated|provided|specified|found|available|given|in\s+the\s+(sources|documents|context))"
    r"|(sources|documents|context)\s+(do\s+not|don'?t)\s+(say|mention|contain|include|provide)"
    r"|there\s+is\s+no\s+(information|mention)"
    r"|unknown)",
    re.IGNORECASE,
)


def parse_citations(text: str, count: int | None = None) -> list[int]:
    """The source numbers a reply cites, in first-cited order, without repeats.

    Reads ``[n]``, ``[n, m]``, ``[n; m]`` and ``[n][m]``; ``[ 4 ]`` or ``[a]`` are not citations.

    Args:
        text: the reply.
        count: when given, only numbers of sources that were shown (1..count) are kept; leave it
            out to see every number, e.g. to count a citation of a source never shown as wrong.

    Returns:
        the cited numbers, 1-based as in the prompt.
    """
    numbers: list[int] = []
    for group in CITATION_PATTERN.findall(text):
        for piece in re.split(r"[,;]", group):
            number = int(piece)
            if number not in numbers and (count is None or 1 <= number <= count):
                numbers.append(number)
    return numbers


def is_refusal(text: str) -> bool:
    """True when a reply declines to answer ("I don't know", "not in the sources", ...).

    A phrase list, not a model: good enough to tell an answer from a refusal in the short replies
    a QA prompt asks for, and the rule the evaluation's refusal and hallucination rates rest on.
    The phrases may appear anywhere in the reply ("The sources do not mention it."); an empty
    reply counts as a refusal.
    """
    return not text.strip() or bool(_REFUSAL_PHRASES.search(text.replace("’", "'")))
