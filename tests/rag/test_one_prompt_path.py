"""One retrieval-to-prompt path: ``rag ask``, eval, compare's RAG arm and the server's ``rag``
field give the model byte-identical messages for the same question and store, and agree on the
nothing-relevant refusal.

The model is replaced by a stub of ``tuneforge.generation.generate`` that records the messages
it is given (every caller looks ``generate`` up when it runs), so only the prompts are compared.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from rag_samples import write_docs

from tuneforge.evaluate.arms import COMPARE_ARMS, COMPARE_TASKS
from tuneforge.evaluate.compare import TaskInputs, arm_responder
from tuneforge.evaluate.runner import evaluate
from tuneforge.generation import GenerationSettings
from tuneforge.rag import REFUSAL, answer, rag_prompt
from tuneforge.serve.retrieval import make_retriever
from tuneforge.serve.schemas import RagOptions

DOCS = {
    "pump.md": "# Pump\n\nThe Orla pump costs 70 euros. It ships from the Vesk depot.",
    "depot.txt": "Depot\n\nThe Vesk depot opens at 06:45 and closes at 18:00.",
    "lamp.md": "# Lamp\n\nThe Lumen lamp has a warranty of 3 years.",
}
QUESTION = "How much does the Orla pump cost?"
OFF_TOPIC = "Who won the football world cup in 1998?"
TOP_K = 3
KNOWLEDGE = next(task for task in COMPARE_TASKS if task.name == "knowledge")
BASE_RAG = next(arm for arm in COMPARE_ARMS if arm.name == "base+rag")


@pytest.fixture
def store(make_store, tmp_path):
    store = make_store()
    store.ingest(write_docs(tmp_path / "docs", DOCS), progress=False)
    return store


@pytest.fixture
def prompts(record_prompts) -> list[list[dict]]:
    """Every ``messages`` the model is asked with, in call order."""
    return record_prompts("It costs 70 euros [1].")


def _server_messages(store, messages: list[dict], top_k: int = TOP_K) -> tuple[list[dict], list]:
    def search(question, top_k, mode):
        return store.search(question, top_k=top_k, mode=mode)

    return asyncio.run(make_retriever(search)(messages, RagOptions(top_k=top_k)))


def _bytes(messages: list[dict]) -> str:
    return json.dumps(messages, ensure_ascii=False)


def test_rag_ask_eval_compare_and_server_send_identical_prompts(
    store, prompts, tiny_model_dir, capsys
):
    from tuneforge.cli import main

    store_args = ["--store", str(store.folder), "--model", str(tiny_model_dir)]
    code = main(["rag", "ask", *store_args, "--top-k", str(TOP_K), QUESTION])
    assert code == 0 and "*[1]" in capsys.readouterr().out  # the stub's [1] marks source 1
    result = answer(QUESTION, store, None, None, top_k=TOP_K)
    item = {"question": QUESTION, "answer": "70 euros", "source": "pump.md"}
    evaluate(None, None, [item], ["contains_answer", "citation"], store)
    inputs = TaskInputs(KNOWLEDGE, [item], store, GenerationSettings(max_new_tokens=4))
    arm_responder(BASE_RAG, inputs, None, None)({"prompt": QUESTION})
    served, sources = _server_messages(store, [{"role": "user", "content": QUESTION}])

    rag_ask, library, evaluated, compared = prompts
    assert rag_ask[-1]["content"].startswith("Sources:\n\n[1] Pump (§ Pump)\n# Pump\n\nThe Orla")
    assert len(result.hits) == TOP_K  # the best hit is relevant, so every hit is shown
    for other in (library, evaluated, compared, served, result.messages):
        assert _bytes(other) == _bytes(rag_ask)
    assert [s.source for s in sources] == [hit.source for hit in result.hits]


def test_client_system_and_earlier_turns_are_placed_alike(store, prompts):
    conversation = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": QUESTION},
    ]
    evaluate(None, None, [{"messages": conversation, "answer": "70 euros"}], ["latency"], store)
    answer(
        QUESTION,
        store,
        None,
        None,
        top_k=TOP_K,
        client_system="Answer in French.",
        history=conversation[1:3],
    )
    served, _ = _server_messages(store, conversation)
    evaluated, library = prompts
    assert _bytes(evaluated) == _bytes(library) == _bytes(served)
    assert [m["role"] for m in served] == ["system", "user", "assistant", "user"]
    assert served[0]["content"].endswith("\n\nAnswer in French.")


def test_rag_ask_system_option_is_the_clients_system_text(store, prompts, tiny_model_dir):
    from tuneforge.cli import main

    store_args = ["--store", str(store.folder), "--model", str(tiny_model_dir)]
    assert main(["rag", "ask", *store_args, "--system", "Answer in French.", QUESTION]) == 0
    answer(QUESTION, store, None, None, client_system="Answer in French.")
    served, _ = _server_messages(
        store,
        [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": QUESTION}],
        top_k=5,  # rag ask's default
    )
    rag_ask, library = prompts
    assert _bytes(rag_ask) == _bytes(library) == _bytes(served)


def test_nothing_relevant_is_the_same_refusal_everywhere(store, prompts):
    result = answer(OFF_TOPIC, store, None, None, top_k=TOP_K)
    assert (result.text, result.refused, result.hits, result.reply) == (REFUSAL, True, [], None)

    item = {"question": OFF_TOPIC, "answer": None}
    evaluated = evaluate(None, None, [item], ["refusal"], store)
    assert evaluated.rows[0]["reply"] == REFUSAL and evaluated.rows[0]["refused"]
    inputs = TaskInputs(KNOWLEDGE, [item], store, GenerationSettings(max_new_tokens=4))
    response = arm_responder(BASE_RAG, inputs, None, None)({"prompt": OFF_TOPIC})
    assert (response.text, response.refused, response.sources) == (REFUSAL, True, {})

    # The server's retriever reports the same decision: no sources (the endpoint then answers
    # REFUSAL); the decision is the shared rule's.
    _, sources = _server_messages(store, [{"role": "user", "content": OFF_TOPIC}])
    assert sources == []
    assert rag_prompt(OFF_TOPIC, store.search(OFF_TOPIC, top_k=TOP_K)).refused
    assert prompts == []  # no model was asked, anywhere
