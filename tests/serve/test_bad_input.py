"""Bad input, auth and adapter-path safety: a 4xx with an OpenAI-style body, and the server
keeps serving; a full queue answers 429 at once."""

from __future__ import annotations

import json
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
    link = adapter_root / "link-out-bad-input"  # the root is shared; this test's own link
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
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


CHAT = b'{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages.0.content"),
        ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}', "messages.0.content"),
        ("/v1/chat/completions", CHAT + b', "stop": ["\\ud800"]}', "stop"),
        ("/v1/chat/completions", b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}', "model"),
        ("/v1/completions", b'{"model": "tiny", "prompt": "\\ud83d"}', "prompt"),
        ("/v1/completions", b'{"model": "tiny", "prompt": ["\\ud83d"]}', "prompt"),
        ("/v1/completions", b'{"model": "\\udc00", "prompt": "hi"}', "model"),
        ("/v1/completions", b'{"model": "tiny", "prompt": "hi", "stop": "\\udc00"}', "stop"),
        ("/v1/load_lora_adapter", b'{"lora_name": "x", "lora_path": "\\ud800"}', "lora_path"),
        ("/v1/load_lora_adapter", b'{"lora_name": "x", "lora_path": "a\\u0000b"}', "lora_path"),
        ("/v1/unload_lora_adapter", b'{"lora_name": "\\ud800"}', "lora_name"),
        # UTF-8 bytes of a surrogate: Python's JSON reader decodes them to one.
        ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', "messages.0.content"),
        # As a key (pydantic refuses it as the object's text), never echoed in the error body.
        ("/v1/chat/completions", CHAT + b', "rag": {"\\ud800": 1}}', "rag"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_refused_with_400(server, path, body, param):
    """Item 8: JSON may escape half a UTF-16 pair; that is no text a tokenizer can encode."""
    status, text = server.raw("POST", path, body)
    assert status == 400, text
    error = error_of(text)
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    still_serves(server)


def test_body_that_is_not_utf8_is_400(server):
    status, text = server.raw("POST", "/v1/chat/completions", CHAT[:-2] + b'"\xff"}]}')
    assert status == 400, text
    error_of(text)


def test_a_valid_surrogate_pair_is_text(server):
    status, text = server.raw(
        "POST",
        "/v1/chat/completions",
        b'{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}',
    )
    assert status == 200, text


@pytest.mark.parametrize(("seed", "status"), [(2**63, 400), (2**64, 400), (-(2**63) - 1, 400), (2**63 - 1, 200), (-1, 200)])  # fmt: skip
def test_seed_must_fit_in_64_bits(server, seed, status):
    """Item 8: OpenAI's seed is a signed 64-bit integer; beyond it is a 400, not a 500."""
    body = {"model": BASE_NAME, "messages": HELLO, "max_tokens": 2, "temperature": 1, "seed": seed}
    got, text = server.http("POST", "/v1/chat/completions", body)
    assert got == status, text
    if status == 400:
        assert error_of(text)["param"] == "seed"


@pytest.mark.parametrize("token", ["clé".encode(), "clé".encode("latin-1"), b"\xff\xfe"])
def test_non_ascii_bearer_token_is_401(server, token):
    """Item 8: a token that is not ASCII is a wrong key (401), not a crash."""
    status, text = server.raw("GET", "/v1/models", headers={"Authorization": b"Bearer " + token})
    assert status == 401, text
    assert error_of(text)["code"] == "invalid_api_key"


@pytest.mark.parametrize("key", ["clé", "key with space", " padded", "tab\tkey", "\x7f"])
def test_api_key_must_be_visible_ascii(key):
    """Item 8: a key no HTTP client can send in a header is refused at start-up."""
    from tuneforge.errors import ConfigError
    from tuneforge.serve import ServeSettings

    with pytest.raises(ConfigError) as caught:
        ServeSettings(api_key=key)
    assert "--api-key" in str(caught.value)
    assert key not in str(caught.value)  # a key is never printed


@pytest.mark.parametrize(
    ("kind", "config"),
    [("list", "[]"), ("null", "null"), ("string", '"lora"'), ("number", "3"), ("folder", None)],
)
def test_adapter_config_that_is_not_an_object_is_400(server, adapter_root, kind, config):
    """Item 8: adapter_config.json must hold a JSON object; anything else is a 400."""
    folder = adapter_root / f"bad-config-{kind}"
    folder.mkdir(exist_ok=True)
    target = folder / "adapter_config.json"
    if config is None:
        target.mkdir(exist_ok=True)
    else:
        target.write_text(config)
    status, text = server.http(
        "POST", "/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": str(folder)}
    )
    assert status == 400, text
    error = error_of(text)
    assert error["code"] == "invalid_adapter" and error["param"] == "lora_path"
    assert "adapter_config.json" in error["message"]
    assert "bad" not in [model.id for model in server.client().models.list()]
    still_serves(server)


def test_unhandled_errors_are_openai_500s_counted_and_logged(tiny_model_dir, caplog):
    """Item 8: a failure the server did not expect is a 500 in the OpenAI shape that says
    nothing of the exception, counted in /metrics (with the request) and logged."""
    from tuneforge.serve.retrieval import make_retriever

    def broken_search(question: str, top_k: int, mode: str):
        raise RuntimeError("the store at /srv/secret/store exploded")

    with run_server(
        tiny_model_dir, api_key=None, retriever=make_retriever(broken_search)
    ) as server:
        body = {"model": BASE_NAME, "messages": HELLO, "rag": {"top_k": 2}}
        status, text = server.http("POST", "/v1/chat/completions", body)
        assert status == 500
        error = error_of(text)
        assert error["type"] == "server_error" and error["code"] == "server_error"
        assert "secret" not in error["message"] and "exploded" not in error["message"]
        _, metrics = server.http("GET", "/metrics")
        assert "tuneforge_unhandled_errors_total 1" in metrics
        assert 'tuneforge_requests_total{path="/v1/chat/completions",status="500"} 1' in metrics
        still_serves(server)
    logged = [r for r in caplog.records if r.name == "tuneforge.serve" and r.exc_info]
    assert logged and "exploded" in str(logged[0].exc_info[1])
