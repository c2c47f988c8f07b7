"""An adapter trained on retrieval prompts (``train --store``) is asked by the server the way it
was trained: its prompt record (``rag_prompt.json``) sets the format, the system text and the
defaults of ``top_k`` and mode; what a request sets wins."""

from __future__ import annotations

import asyncio
import json
import shutil

from test_rag_on_request import word_search

from conftest import run_server
from tuneforge.rag import rag_prompt
from tuneforge.rag.raft import RaftSettings, write_prompt_record
from tuneforge.serve.retrieval import make_retriever
from tuneforge.serve.schemas import RagOptions

QUESTION = "How long is the warranty period of the lamp?"


def test_the_record_sets_format_system_and_defaults_the_request_does_not(tmp_path):
    record = {"prompt_format": "sources", "client_system": "Cite.", "top_k": 1, "mode": "bm25"}
    record["min_similarity"] = 0.3
    searched = []

    def search(question, top_k, mode):
        searched.append((top_k, mode))
        return word_search(question, top_k, mode)

    retrieve = make_retriever(search)
    asked = [{"role": "user", "content": QUESTION}]
    messages, sources = asyncio.run(retrieve(asked, RagOptions(), record))
    assert searched[-1] == (1, "bm25") and len(sources) == 1
    assert (
        messages
        == rag_prompt(QUESTION, word_search(QUESTION, 1, "bm25"), client_system="Cite.").messages
    )
    # The threshold it was trained with: nothing is relevant enough, the refusal follows.
    assert asyncio.run(retrieve(asked, RagOptions(), {**record, "min_similarity": 0.99})) == (
        None,
        [],
    )
    # The request's own top_k, mode and system message win over the record.
    told = [{"role": "system", "content": "Mine."}, *asked]
    messages, sources = asyncio.run(retrieve(told, RagOptions(top_k=2, mode="dense"), record))
    assert searched[-1] == (2, "dense") and len(sources) == 2
    assert messages[0]["content"].endswith("\n\nMine.") and "Cite." not in messages[0]["content"]


def test_the_server_reads_the_requested_adapters_record(tiny_model_dir, adapter_root, tmp_path):
    raft = tmp_path / "raft"
    shutil.copytree(adapter_root / "a1", raft)
    write_prompt_record(raft, RaftSettings(top_k=1), tmp_path / "kb")
    adapters = {"raft": raft, "plain": adapter_root / "a2"}
    with run_server(
        tiny_model_dir, adapters, api_key=None, retriever=make_retriever(word_search)
    ) as server:
        counts = {}
        for name in ("raft", "plain"):
            body = {
                "model": name,
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 2,
                "rag": {},
            }
            status, text = server.http("POST", "/v1/chat/completions", body)
            assert status == 200, text
            counts[name] = len(json.loads(text)["sources"])
    assert counts == {"raft": 1, "plain": 2}  # the record's top_k; RagOptions' default 5 (2 docs)


def test_the_record_is_read_once_when_the_adapter_loads(tiny_model_dir, adapter_root, tmp_path):
    import pytest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.adapters import AdapterRegistry
    from tuneforge.errors import AdapterError
    from tuneforge.rag.raft import PROMPT_RECORD

    raft = tmp_path / "raft"
    shutil.copytree(adapter_root / "a1", raft)
    write_prompt_record(raft, RaftSettings(top_k=1), tmp_path / "kb")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    registry = AdapterRegistry(model, AutoTokenizer.from_pretrained(tiny_model_dir))
    registry.load("raft", raft)
    registry.load("plain", adapter_root / "a2")
    (raft / PROMPT_RECORD).write_text("not json")  # a later edit does not reach the server
    assert registry.trained_prompt("raft")["top_k"] == 1
    assert registry.trained_prompt("plain") is None and registry.trained_prompt(None) is None
    registry.unload("raft")
    assert registry.trained_prompt("raft") is None
    # A broken record refuses the load, naming the file; nothing is loaded.
    with pytest.raises(AdapterError, match=f"{PROMPT_RECORD}: cannot read the trained prompt"):
        registry.load("raft", raft)
    assert registry.names() == ["plain"]
