"""Prompts with numbered sources, citations, refusals, and answering with a (tiny) model."""

from __future__ import annotations

import pytest
from rag_samples import write_docs

from tuneforge.generation import GenerationSettings
from tuneforge.rag import REFUSAL, Hit, answer, build_rag_messages, cited_sources, is_refusal


def _hit(n: int) -> Hit:
    return Hit(
        f"Fact number {n}.", f"/docs/{n}.md", f"§ Part {n}", 1.0, f"d{n}:0", f"d{n}", f"Doc {n}"
    )


def test_messages_number_the_sources_and_ask_for_citations():
    messages = build_rag_messages("What is fact two?", [_hit(1), _hit(2)])
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    assert "[1]" in system and REFUSAL in system
    assert "[1] Doc 1 (§ Part 1)\nFact number 1." in user
    assert "[2] Doc 2 (§ Part 2)\nFact number 2." in user
    assert user.rstrip().endswith("Question: What is fact two?")
    custom = build_rag_messages("q", [_hit(1)], system="Be brief.")
    assert custom[0]["content"] == "Be brief."


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [
        ("It is 5 [2]. See [1] and [2].", 3, [2, 1]),
        ("Nothing cited", 2, []),
        ("[7] [0] [1]", 2, [1]),
    ],
)
def test_cited_sources(text, count, expected):
    assert cited_sources(text, count) == expected


@pytest.mark.parametrize(
    ("text", "refused"),
    [("I don't know.", True), ("i do not know the answer", True), ("The price is 5 [1].", False)],
)
def test_is_refusal(text, refused):
    assert is_refusal(text) is refused


@pytest.fixture
def small_store(make_store, tmp_path):
    store = make_store()
    store.ingest(
        write_docs(tmp_path / "docs", {"pump.md": "# Pump\n\nThe Orla pump costs 70 euros."}),
        progress=False,
    )
    return store


def test_answer_refuses_without_calling_the_model_when_nothing_is_relevant(small_store):
    result = answer(
        "Who won the football world cup in 1998?", small_store, model=None, tokenizer=None
    )
    assert result.refused and result.text == REFUSAL and result.hits == [] and result.reply is None


def test_answer_generates_over_the_retrieved_sources(small_store, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    settings = GenerationSettings(max_new_tokens=5)
    result = answer("How much does the Orla pump cost?", small_store, model, tokenizer, 3, settings)
    assert len(result.hits) == 1 and "70 euros" in result.hits[0].text
    assert result.reply is not None and result.reply.completion_tokens <= 5
    assert result.reply.prompt_tokens > 20  # the sources are in the prompt
