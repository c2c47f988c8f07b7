"""The one citation parser and the one refusal detector, on tables of replies."""

from __future__ import annotations

import pytest

import tuneforge.evaluate
import tuneforge.evaluate.metrics
from tuneforge.rag import REFUSAL, is_refusal, parse_citations


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("It opened in 1987 [1].", [1]),
        ("It is 5 [2]. See [1] and [2].", [2, 1]),  # first-cited order, no repeats
        ("See [1, 2].", [1, 2]),
        ("See [2,3] and [3][1].", [2, 3, 1]),
        ("See [1; 3].", [1, 3]),
        ("See [1 ; 2 ,3].", [1, 2, 3]),
        ("Shown as [12].", [12]),
        ("No citation here.", []),
        ("A list [a] is not a citation [ 4 ], nor is [].", []),
        ("[7] [0] [1]", [7, 0, 1]),  # every number, shown or not: a wrong citation counts wrong
    ],
)
def test_parse_citations(text, numbers):
    assert parse_citations(text) == numbers


@pytest.mark.parametrize(
    ("text", "count", "numbers"),
    [
        ("[7] [0] [1]", 2, [1]),  # only sources that were shown
        ("See [1, 2] and [3].", 2, [1, 2]),
        ("See [2; 1].", 2, [2, 1]),
        ("Nothing cited", 2, []),
    ],
)
def test_parse_citations_of_shown_sources(text, count, numbers):
    assert parse_citations(text, count) == numbers


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        (REFUSAL, True),
        ("I don't know.", True),
        ("i do not know the answer", True),
        ("I dont know", True),
        ("I don’t know.", True),  # typographic apostrophe
        ("I do not know the answer to that.", True),
        ("I cannot find that in the sources.", True),
        ("I'm not sure.", True),
        ("The sources do not mention it.", True),
        ("That is not in the documents.", True),
        ("There is no information about this.", True),
        ("The price is not stated [1].", True),
        ("The answer is unknown.", True),
        ("Sorry, but I don't know who won.", True),  # anywhere in the reply, not only first
        ("", True),
        ("   ", True),
        ("The bridge opened in 1987 [1].", False),
        ("The price is 5 [1].", False),
        ("Paris.", False),
        ("You know, it is 70 euros.", False),
        ("Nobody knows the Orla pump better than Vesk [2].", False),
    ],
)
def test_is_refusal(text, refused):
    assert is_refusal(text) is refused


def test_evaluation_reads_replies_with_the_same_functions():
    # evaluate re-exports the rag functions; there is no second implementation to drift.
    assert tuneforge.evaluate.is_refusal is is_refusal
    assert tuneforge.evaluate.parse_citations is parse_citations
    assert tuneforge.evaluate.metrics.parse_citations is parse_citations
    assert not hasattr(tuneforge.evaluate.metrics, "is_refusal")
