"""The real server driven by the official ``openai`` client: models, chat, completions,
streaming, batching of concurrent requests, hot swap while requests run, metrics."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import openai
import pytest
import torch

from conftest import BASE_NAME

HELLO = [{"role": "user", "content": "Hello! How can I help you today?"}]
PROMPTS = [
    [{"role": "user", "content": "The capital of France is"}],
    [{"role": "system", "content": "you are a helpful assistant."}, *HELLO],
    [{"role": "user", "content": "Please return the order as JSON with the fields name"}],
]


def chat(client, model: str, messages: list[dict], max_tokens: int = 12, **kwargs):
    return client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, **kwargs
    )


def test_models_lists_base_and_loaded_adapters(server):
    ids = [model.id for model in server.client().models.list()]
    assert ids[0] == BASE_NAME
    assert "a1" in ids


@pytest.mark.parametrize("adapter", [None, "a1"])
def test_chat_equals_tuneforge_generate(server, reference, adapter):
    """Greedy replies through the server are token-for-token those of `tuneforge generate`."""
    client = server.client()
    for messages in PROMPTS:
        response = chat(client, adapter or BASE_NAME, messages)
        expected = reference(messages, adapter)
        assert response.choices[0].message.content == expected.text
        assert response.choices[0].finish_reason == expected.finish_reason
        assert response.usage.prompt_tokens == expected.prompt_tokens
        assert response.usage.completion_tokens == expected.completion_tokens
        assert response.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens
        assert response.model == (adapter or BASE_NAME)


def test_adapter_changes_the_reply(server):
    client = server.client()
    base = [chat(client, BASE_NAME, m).choices[0].message.content for m in PROMPTS]
    tuned = [chat(client, "a1", m).choices[0].message.content for m in PROMPTS]
    assert base != tuned


def test_streaming_chunks_join_to_the_full_reply(server):
    client = server.client()
    full = chat(client, "a1", PROMPTS[2], max_tokens=20)
    stream = chat(
        client, "a1", PROMPTS[2], max_tokens=20, stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage.completion_tokens == full.usage.completion_tokens


def test_stream_is_server_sent_events_ending_with_done(server):
    body = {
        "model": BASE_NAME,
        "messages": HELLO,
        "max_tokens": 5,
        "temperature": 0,
        "stream": True,
    }
    status, text = server.http("POST", "/v1/chat/completions", body)
    assert status == 200
    events = [line for line in text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"


def test_stop_sequence_cuts_the_reply(server):
    client = server.client()
    full = chat(client, "a1", PROMPTS[0], max_tokens=20).choices[0].message.content
    stop = full[3:5]
    assert stop.strip(), "the reference reply is too short to pick a stop sequence"
    cut = chat(client, "a1", PROMPTS[0], max_tokens=20, stop=[stop])
    assert cut.choices[0].message.content == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_completions_take_a_raw_prompt(server, tiny_model_dir):
    """/v1/completions: no chat template; equals plain greedy `model.generate` on the prompt."""
    from tuneforge.models import load_model

    prompt = "The capital of Norway is"
    response = server.client().completions.create(
        model=BASE_NAME, prompt=prompt, max_tokens=8, temperature=0
    )
    loaded = load_model(str(tiny_model_dir))
    ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = loaded.model.generate(
            ids,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=loaded.tokenizer.eos_token_id,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
    expected = loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert response.object == "text_completion"
    assert response.choices[0].text == expected
    assert response.usage.prompt_tokens == ids.shape[1]
    stream = server.client().completions.create(
        model=BASE_NAME, prompt=prompt, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in stream) == expected


def test_sampling_with_a_seed_repeats(server):
    client = server.client()
    replies = [
        client.chat.completions.create(
            model="a1", messages=HELLO, max_tokens=8, temperature=1.0, top_p=0.9, seed=7
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert replies[0] == replies[1]


def test_concurrent_requests_on_mixed_adapters_match_alone(server):
    """Requests sent together (batched, rows on different adapters) answer as they do alone."""
    client = server.client()
    jobs = [(model, messages) for model in (BASE_NAME, "a1") for messages in PROMPTS]
    alone = [chat(client, model, messages).choices[0].message.content for model, messages in jobs]
    rows_before = server.engine.batched_rows
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: chat(client, *job).choices[0].message.content, jobs))
    assert together == alone
    assert server.engine.batched_rows - rows_before == len(jobs)


def test_load_and_unload_while_requests_run(server, adapter_root, reference):
    """Hot swap without restart: requests in flight on an adapter finish before it goes."""
    client = server.client()
    status, _ = server.http(
        "POST", "/v1/load_lora_adapter", {"lora_name": "a2", "lora_path": str(adapter_root / "a2")}
    )
    assert status == 200
    assert "a2" in [model.id for model in client.models.list()]
    expected = reference(PROMPTS[1], "a2", max_tokens=60).text

    results, errors = [], []

    def ask() -> None:
        try:
            results.append(chat(client, "a2", PROMPTS[1], max_tokens=60).choices[0].message.content)
        except openai.OpenAIError as err:  # recorded, then asserted empty
            errors.append(err)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while server.engine.registry.in_use("a2") < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    # Meanwhile: load another adapter and serve the base.
    status, _ = server.http(
        "POST", "/v1/load_lora_adapter", {"lora_name": "a3", "lora_path": str(adapter_root / "a3")}
    )
    assert status == 200
    status, _ = server.http("POST", "/v1/unload_lora_adapter", {"lora_name": "a2"})
    assert status == 200
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert results == [expected] * 3
    assert server.engine.registry.in_use("a2") == 0  # each finished request released it
    ids = [model.id for model in client.models.list()]
    assert "a2" not in ids and "a3" in ids
    with pytest.raises(openai.NotFoundError):
        chat(client, "a2", PROMPTS[1])
    assert (
        chat(client, "a3", PROMPTS[0]).choices[0].message.content
        == reference(PROMPTS[0], "a3").text
    )
    status, _ = server.http("POST", "/v1/unload_lora_adapter", {"lora_name": "a3"})
    assert status == 200


def test_health_and_metrics(server):
    chat(server.client(), BASE_NAME, HELLO, max_tokens=3)
    status, text = server.http("GET", "/health", auth=False)
    assert status == 200 and '"ok"' in text
    status, text = server.http("GET", "/metrics")
    assert status == 200
    for name in (
        'tuneforge_requests_total{path="/v1/chat/completions",status="200"}',
        'tuneforge_tokens_total{model="tiny",kind="completion"}',
        "tuneforge_request_latency_seconds_count",
        "tuneforge_queue_depth 0",
        "tuneforge_loaded_adapters 1",
        'tuneforge_adapter_loaded{adapter="a1"} 1',
    ):
        assert name in text, name
