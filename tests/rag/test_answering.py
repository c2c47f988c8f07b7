"""Prompt formats, the relevance rule, and answering with a (tiny) model."""

from __future__ import annotations

import pytest
from rag_samples import write_docs

from tuneforge.errors import ConfigError
from tuneforge.generation import GenerationSettings
from tuneforge.rag import (
    PROMPT_FORMATS,
    REFUSAL,
    Hit,
    answer,
    build_rag_messages,
    rag_prompt,
    relevant_hits,
)


def _hit(n: int, similarity: float = 1.0) -> Hit:
    return Hit(
        f"Fact number {n}.",
        f"/docs/{n}.md",
        f"§ Part {n}",
        1.0,
        f"d{n}:0",
        f"d{n}",
        f"Doc {n}",
        similarity=similarity,
    )


def test_sources_format_numbers_the_sources_and_asks_for_citations():
    messages = build_rag_messages("  What is fact two? ", [_hit(1), _hit(2)])
    instruction = PROMPT_FORMATS["sources"].instruction
    assert messages == [
        {"role": "system", "content": instruction},
        {
            "role": "user",
            "content": "Sources:\n\n[1] Doc 1 (§ Part 1)\nFact number 1.\n\n"
            "[2] Doc 2 (§ Part 2)\nFact number 2.\n\nQuestion: What is fact two?",
        },
    ]
    assert "[1]" in instruction and REFUSAL in instruction


def test_client_system_is_appended_and_earlier_turns_kept_before_the_question():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    messages = build_rag_messages("q", [_hit(1)], client_system="Be brief.", history=history)
    assert messages[0] == {
        "role": "system",
        "content": PROMPT_FORMATS["sources"].instruction + "\n\nBe brief.",
    }
    assert messages[1:3] == history
    assert messages[3]["role"] == "user" and messages[3]["content"].endswith("Question: q")


def test_examples_format_puts_unnumbered_demonstrations_after_the_system_text():
    hits = [_hit(1), _hit(2)]
    messages = build_rag_messages(
        "Two lamps to Oslo", hits, prompt_format="examples", client_system="Reply in JSON."
    )
    assert messages == [
        {
            "role": "system",
            "content": "Reply in JSON.\n\nExamples of requests and the JSON they become:\n\n"
            "Fact number 1.\n\nFact number 2.",
        },
        {"role": "user", "content": "Two lamps to Oslo"},
    ]
    # Without hits and without system text there is no system message at all.
    assert build_rag_messages("x", [], prompt_format="examples") == [
        {"role": "user", "content": "x"}
    ]


def test_unknown_prompt_format_names_the_choices():
    with pytest.raises(ConfigError, match=r"prompt format 'chat' is unknown.*sources, examples"):
        build_rag_messages("q", [_hit(1)], prompt_format="chat")


@pytest.mark.parametrize(
    ("similarities", "shown"),
    [
        ([0.9, 0.1], 2),  # the best is relevant: every hit is shown, the weak one too
        ([0.2, 0.35], 2),  # order does not matter, the best one does
        ([0.3], 1),  # the threshold itself is relevant
        ([0.29, 0.1], 0),  # nothing relevant: nothing shown
        ([], 0),
    ],
)
def test_relevant_hits_keeps_all_or_none(similarities, shown):
    hits = [_hit(n, s) for n, s in enumerate(similarities, start=1)]
    assert relevant_hits(hits, 0.3) == hits[:shown]


def test_rag_prompt_refuses_for_sources_but_not_for_examples():
    weak = [_hit(1, 0.1)]
    refused = rag_prompt("q", weak)
    assert refused.refused and refused.messages is None and refused.hits == []
    examples = rag_prompt("q", weak, prompt_format="examples", client_system="JSON only.")
    assert not examples.refused and examples.hits == []
    assert examples.messages == [
        {"role": "system", "content": "JSON only."},
        {"role": "user", "content": "q"},
    ]
    shown = rag_prompt("q", [_hit(1, 0.9), _hit(2, 0.0)])
    assert not shown.refused and [h.chunk_id for h in shown.hits] == ["d1:0", "d2:0"]
    assert shown.messages == build_rag_messages("q", shown.hits)


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
    assert result.refused and result.text == REFUSAL and result.hits == []
    assert result.reply is None and result.messages is None


def test_answer_generates_over_the_retrieved_sources(small_store, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    settings = GenerationSettings(max_new_tokens=5)
    question = "How much does the Orla pump cost?"
    result = answer(question, small_store, model, tokenizer, 3, settings)
    assert len(result.hits) == 1 and "70 euros" in result.hits[0].text
    assert result.messages == build_rag_messages(question, result.hits)
    assert result.reply is not None and result.reply.completion_tokens <= 5
    assert result.reply.prompt_tokens > 20  # the sources are in the prompt
