"""Bad input, auth and adapter-path safety: a 4xx with an OpenAI-style body, and the server
keeps serving; a full queue answers 429 at once."""

from __future__ import annotations

import json
import os
import threading
import time

import openai
import pytest

from conftest import BASE_NAME, run_server

HELLO = [{"role": "user", "content": "Hello!"}]


def error_of(text: str) -> dict:
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def still_serves(server) -> None:
    reply = server.client().chat.completions.create(
        model=BASE_NAME, messages=HELLO, max_tokens=2, temperature=0
    )
    assert reply.usage.completion_tokens >= 1


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_request", None),
        ({"model": "nope", "messages": HELLO}, 404, "model_not_found", "model"),
        ({"model": BASE_NAME}, 400, "invalid_request", "messages"),
        ({"model": BASE_NAME, "messages": []}, 400, "invalid_request", "messages"),
        ({"model": BASE_NAME, "messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_request", "messages.0.role"),
        ({"model": BASE_NAME, "messages": HELLO, "temperature": 5}, 400, "invalid_request", "temperature"),
        ({"model": BASE_NAME, "messages": HELLO, "top_p": 0}, 400, "invalid_request", "top_p"),
        ({"model": BASE_NAME, "messages": HELLO, "max_tokens": 0}, 400, "invalid_request", "max_tokens"),
        ({"model": BASE_NAME, "messages": HELLO, "max_tokens": "many"}, 400, "invalid_request", "max_tokens"),
        ({"model": BASE_NAME, "messages": HELLO, "n": 3}, 400, "invalid_request", "n"),
        ({"model": BASE_NAME, "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_request", "stop"),
        ({"model": BASE_NAME, "messages": HELLO, "max_tokens": 100000}, 400, "context_length_exceeded", "messages"),
        ({"model": BASE_NAME, "messages": HELLO, "rag": {"top_k": 3}}, 400, "rag_unavailable", "rag"),
    ],
)  # fmt: skip
def test_bad_chat_requests_get_openai_errors(server, body, status, code, param):
    got, text = server.http("POST", "/v1/chat/completions", body)
    assert got == status
    error = error_of(text)
    assert error["code"] == code
    assert error["param"] == param
    still_serves(server)


def test_prompt_longer_than_the_context(server):
    long_text = "The capital of France is Paris. " * 200  # far over the tiny model's 512 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().chat.completions.create(
            model=BASE_NAME, messages=[{"role": "user", "content": long_text}]
        )
    assert caught.value.body["code"] == "context_length_exceeded"
    assert "512" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        server.client().completions.create(model=BASE_NAME, prompt=long_text)
    still_serves(server)


def test_unknown_path_and_method_are_openai_errors(server):
    status, text = server.http("GET", "/v1/nothing-here")
    assert status == 404
    error_of(text)
    status, text = server.http("GET", "/v1/chat/completions")
    assert status == 405
    error_of(text)


def test_api_key_required_everywhere_but_health(server):
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/load_lora_adapter"),
        ("POST", "/v1/unload_lora_adapter"),
    ]:
        status, text = server.http(method, path, {} if method == "POST" else None, auth=False)
        assert status == 401, path
        assert error_of(text)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong-key").models.list()
    status, _ = server.http("GET", "/health", auth=False)
    assert status == 200


def test_adapter_paths_outside_the_root_are_refused(server, adapter_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link = adapter_root / "link-out"
    if not link.exists():
        os.symlink(outside, link)
    for path in ["/etc", str(adapter_root / ".." / "x"), str(link), str(outside)]:
        status, text = server.http(
            "POST", "/v1/load_lora_adapter", {"lora_name": "evil", "lora_path": path}
        )
        assert status == 403, path
        assert error_of(text)["code"] == "adapter_path_not_allowed"
    # Inside the root but not an adapter: a 400 naming the folder.
    (adapter_root / "empty").mkdir(exist_ok=True)
    status, text = server.http(
        "POST",
        "/v1/load_lora_adapter",
        {"lora_name": "empty", "lora_path": str(adapter_root / "empty")},
    )
    assert status == 400
    assert "adapter_config.json" in error_of(text)["message"]
    # A name already in use, and unloading what is not loaded.
    status, text = server.http(
        "POST", "/v1/load_lora_adapter", {"lora_name": "a1", "lora_path": str(adapter_root / "a1")}
    )
    assert status == 400 and error_of(text)["code"] == "adapter_exists"
    status, text = server.http("POST", "/v1/unload_lora_adapter", {"lora_name": "ghost"})
    assert status == 404 and error_of(text)["code"] == "model_not_found"
    assert "evil" not in [model.id for model in server.client().models.list()]
    still_serves(server)


def test_full_queue_answers_429_promptly(tiny_model_dir):
    """One request decoding, one waiting (max_queue=1): the next is refused at once."""
    with run_server(tiny_model_dir, api_key=None, max_batch_size=1, max_queue=1) as server:
        client = server.client()
        long_request = {"model": BASE_NAME, "messages": HELLO, "max_tokens": 400, "temperature": 0}
        results = []

        def send() -> None:
            results.append(server.http("POST", "/v1/chat/completions", long_request)[0])

        first = threading.Thread(target=send)
        first.start()
        deadline = time.monotonic() + 30
        while server.engine.batches < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        second = threading.Thread(target=send)
        second.start()
        while server.engine.queue_depth < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        start = time.monotonic()
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=BASE_NAME, messages=HELLO, max_tokens=2)
        assert time.monotonic() - start < 5
        assert caught.value.body["code"] == "queue_full"
        first.join(60)
        second.join(60)
        assert results == [200, 200]
        still_serves(server)
