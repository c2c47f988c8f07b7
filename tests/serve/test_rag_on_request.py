"""RAG on request: ``"rag": {"top_k": k}`` retrieves, puts numbered sources in the prompt and
returns them in ``sources``; nothing relevant found means no sources (the answer is the house
refusal, by ``tuneforge.rag``'s rule, the same as ``rag ask``).

The fast tests search a fixed list of passages (``make_retriever`` over a plain function, so no
embedding model loads); the slow test runs the real store and the real default model.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import BASE_NAME, run_server
from tuneforge.rag import Hit
from tuneforge.serve.retrieval import make_retriever

DOCS = {
    "warranty.md": "# Warranty\n\nThe Lumen desk lamp has a warranty period of 3 years from "
    "the date of purchase. Repairs under warranty are free.\n",
    "shipping.md": "# Shipping\n\nOrders to Oslo ship within 2 days. Shipping to Paris takes "
    "5 days and costs 12 euros.\n",
}


def word_search(question: str, top_k: int, mode: str) -> list[Hit]:
    """Passages ranked by shared words (a stand-in for the store's search)."""
    words = set(question.lower().replace("?", "").split())
    hits = []
    for name, text in DOCS.items():
        overlap = len(words & set(text.lower().split()))
        hits.append(
            Hit(text=text, source=f"/docs/{name}", location="line 3", score=float(overlap),
                chunk_id=name, doc_id=name, title=name, similarity=overlap / 10)
        )  # fmt: skip
    return sorted(hits, key=lambda hit: -hit.score)[:top_k]


@pytest.fixture(scope="module")
def rag_server(tiny_model_dir, adapter_root):
    with run_server(
        tiny_model_dir,
        {"a1": adapter_root / "a1"},
        api_key=None,
        retriever=make_retriever(word_search),
    ) as server:
        yield server


def ask(server, question: str, **extra):
    body = {
        "model": BASE_NAME,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 4,
        "temperature": 0,
        **extra,
    }
    return server.http("POST", "/v1/chat/completions", body)


def test_rag_reply_carries_the_sources_it_put_in_the_prompt(rag_server):
    question = "How long is the warranty period of the lamp?"
    status, text = ask(rag_server, question)
    assert status == 200
    plain = json.loads(text)
    assert plain["sources"] is None
    status, text = ask(rag_server, question, rag={"top_k": 2})
    assert status == 200
    reply = json.loads(text)
    # The best passage is relevant, so all top_k are sources, the weak shipping one too (in
    # hybrid search a word match with low similarity can be the one holding the answer).
    assert [source["index"] for source in reply["sources"]] == [1, 2]
    assert [source["source"] for source in reply["sources"]] == [
        "/docs/warranty.md",
        "/docs/shipping.md",
    ]
    assert "3 years" in reply["sources"][0]["text"]
    # The passage went into the prompt: far more prompt tokens than the bare question.
    assert reply["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 30


def test_nothing_relevant_is_the_refusal_without_calling_the_model(rag_server):
    from tuneforge.rag import REFUSAL

    batches = rag_server.engine.batches
    status, text = ask(rag_server, "zebra xylophone", rag={"top_k": 2})
    assert status == 200
    reply = json.loads(text)
    assert reply["sources"] == []
    assert reply["choices"][0]["message"]["content"] == REFUSAL
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    # Streamed through the official client: the same refusal, the same empty sources.
    chunks = list(
        rag_server.client().chat.completions.create(
            model=BASE_NAME,
            messages=[{"role": "user", "content": "zebra xylophone"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"rag": {"top_k": 2}},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REFUSAL
    finals = [c.model_dump() for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals[0]["choices"][0]["finish_reason"] == "stop" and finals[0]["sources"] == []
    assert chunks[-1].usage.total_tokens == 0
    assert rag_server.engine.batches == batches  # no request reached the model


def test_retriever_builds_the_prompt_with_the_shared_rag_functions():
    from tuneforge.rag import rag_prompt
    from tuneforge.serve.schemas import RagOptions

    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "How long is the warranty period of the lamp?"},
    ]
    retrieve = make_retriever(word_search)
    messages, sources = asyncio.run(retrieve(conversation, RagOptions(top_k=2)))
    hits = word_search(conversation[-1]["content"], 2, "hybrid")
    expected = rag_prompt(
        conversation[-1]["content"], hits, client_system="Be brief.", history=conversation[1:3]
    )
    assert messages == expected.messages
    assert [s.source for s in sources] == [h.source for h in expected.hits]
    # Nothing relevant: no prompt and no sources (the endpoint answers the refusal itself).
    messages, sources = asyncio.run(retrieve([{"role": "user", "content": "zebra"}], RagOptions()))
    assert (messages, sources) == (None, [])


def test_rag_works_with_an_adapter_and_streaming(rag_server):
    stream = rag_server.client().chat.completions.create(
        model="a1",
        messages=[{"role": "user", "content": "How long does shipping to Paris take?"}],
        max_tokens=4,
        temperature=0,
        stream=True,
        extra_body={"rag": {"top_k": 1}},
    )
    last = list(stream)[-1].model_dump()
    assert last["choices"][0]["finish_reason"] is not None
    assert [source["source"] for source in last["sources"]] == ["/docs/shipping.md"]


def test_rag_options_are_validated(rag_server):
    status, text = ask(rag_server, "warranty?", rag={"top_k": 0})
    assert status == 400 and json.loads(text)["error"]["param"] == "rag.top_k"
    status, text = ask(rag_server, "warranty?", rag={"top_k": 2, "mode": "psychic"})
    assert status == 400 and json.loads(text)["error"]["param"] == "rag.mode"
    body = {"model": BASE_NAME, "messages": [{"role": "assistant", "content": "hi"}]}
    status, text = rag_server.http("POST", "/v1/chat/completions", {**body, "rag": {}})
    assert status == 400 and json.loads(text)["error"]["param"] == "messages"


@pytest.mark.slow
def test_real_store_and_default_model_answer_from_the_sources(default_model_dir, tmp_path):
    from tuneforge.rag import RagStore
    from tuneforge.serve.retrieval import build_retriever

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    store = RagStore(tmp_path / "store")
    store.ingest([docs], progress=False)
    retriever = build_retriever(tmp_path / "store", embedder=store.embedder)
    # float32: in bfloat16 (the auto dtype on a CPU with native bf16) the 135M default answers
    # this question "The answer is: 2." (docs/decode.md); the test checks the wiring.
    with run_server(
        default_model_dir, api_key=None, retriever=retriever, dtype="float32"
    ) as server:
        status, text = ask(
            server, "How long is the warranty period of the Lumen desk lamp?",
            rag={"top_k": 2}, max_tokens=40,
        )  # fmt: skip
    assert status == 200
    reply = json.loads(text)
    assert reply["sources"][0]["source"].endswith("warranty.md")
    # The 135M default answers from the source ("The answer is: 3 years.") but does not always
    # write the [n] marker the instruction asks for; the reply's sources say what it rested on.
    assert "3 years" in reply["choices"][0]["message"]["content"]
