"""Limits that keep one client from stalling the server: the request-body limit (413), prompt
tokenization off the event loop (``/health`` answers meanwhile), and a non-streaming request
whose client went away stops decoding."""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import pytest

from conftest import BASE_NAME, run_server

HELLO = [{"role": "user", "content": "Hello!"}]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def open_server(tiny_model_dir):
    """No API key, the default body limit (4 MiB), one row per batch."""
    with run_server(tiny_model_dir, api_key=None, max_batch_size=1) as server:
        yield server


def address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the one response on ``sock`` (the server closes after it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_declared_body_over_the_limit_is_413_before_it_is_read(open_server):
    """Content-Length says 10 MiB: the answer comes at once, without waiting for the body."""
    with socket.create_connection(address(open_server), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (10 * MIB)
        )
        start = time.monotonic()
        status, body = read_response(sock)
    assert time.monotonic() - start < 5
    assert status == 413
    assert body["error"]["code"] == "request_too_large"
    assert body["error"]["type"] == "invalid_request_error"
    assert "4194304" in body["error"]["message"] and "--max-body-bytes" in body["error"]["message"]
    _, metrics = open_server.http("GET", "/metrics")
    assert 'tuneforge_requests_total{path="/v1/chat/completions",status="413"}' in metrics


def test_streamed_body_over_the_limit_is_413(tiny_model_dir):
    """No Content-Length (chunked): counted while it arrives, refused past the limit."""
    with run_server(tiny_model_dir, api_key=None, max_body_bytes=64 * 1024) as server:
        with socket.create_connection(address(server), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            piece, pieces = b"x" * 8192, 0
            while pieces < 20 and not select.select([sock], [], [], 0.2)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))  # until the server answers
                pieces += 1
            status, body = read_response(sock)
        assert pieces == 9  # answered once past 64 KiB (8 pieces), without waiting for the rest
        assert status == 413
        assert body["error"]["code"] == "request_too_large"
        assert "65536" in body["error"]["message"]
        # Just under the limit is read and answered as usual.
        prompt = "The capital of France is Paris. " * 1000  # 32 KB
        status, text = server.http(
            "POST", "/v1/completions", {"model": BASE_NAME, "prompt": prompt, "max_tokens": 2}
        )
        assert status == 400 and json.loads(text)["error"]["code"] == "context_length_exceeded"


def test_health_answers_while_a_large_prompt_is_tokenized(open_server):
    """A 2 MiB prompt (allowed) takes seconds to tokenize; /health keeps answering at once."""
    content = "The capital of France is Paris. " * (2 * MIB // 32)
    body = {"model": BASE_NAME, "messages": [{"role": "user", "content": content}]}
    result = {}

    def send() -> None:
        result["answer"] = open_server.http("POST", "/v1/chat/completions", body)

    big = threading.Thread(target=send)
    big.start()
    time.sleep(0.5)  # uploaded and parsed; now tokenizing
    latencies = []
    while big.is_alive() and len(latencies) < 20:
        start = time.monotonic()
        status, _ = open_server.http("GET", "/health")
        latencies.append(time.monotonic() - start)
        assert status == 200
        time.sleep(0.05)
    still_running = big.is_alive()
    big.join(120)
    assert max(latencies) < 1.0, latencies
    assert still_running or len(latencies) >= 5, "the large request ended before /health was asked"
    status, text = result["answer"]
    assert status == 400 and json.loads(text)["error"]["code"] == "context_length_exceeded"


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def send_and_keep_open(server, body: dict) -> socket.socket:
    """A raw connection that has sent one request and reads nothing."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(address(server), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    return sock


def test_non_streaming_requests_stop_when_their_client_goes_away(open_server):
    """Item 10: clients send a request and close; the one decoding stops early, as streams
    do, and the one still queued is dropped without decoding (one row per batch here)."""
    engine = open_server.engine
    # Each decoding step takes at least 10 ms, so the 400-token reply cannot finish before its
    # client closes, however fast the machine (the tiny model alone decodes 400 tokens in ~1 s).
    slow_step = engine.registry.model.register_forward_pre_hook(lambda *_: time.sleep(0.01))
    try:
        cancelled_while_decoding(open_server, engine)
    finally:
        slow_step.remove()
    # The server goes on serving.
    reply = open_server.client().chat.completions.create(
        model=BASE_NAME, messages=HELLO, max_tokens=2, temperature=0
    )
    assert reply.usage.completion_tokens == 2


def cancelled_while_decoding(open_server, engine) -> None:
    batches, tokens, cancelled = engine.batches, engine.generated_tokens, engine.cancelled_rows
    body = {"model": BASE_NAME, "messages": HELLO, "max_tokens": 400, "temperature": 0}
    decoding = send_and_keep_open(open_server, body)
    wait_for(lambda: engine.batches > batches)
    queued = send_and_keep_open(open_server, body)
    wait_for(lambda: engine.queue_depth == 1)
    queued.close()
    time.sleep(0.3)  # its handler sees the close and cancels the row
    decoding.close()
    wait_for(lambda: engine.cancelled_rows == cancelled + 2)
    assert engine.generated_tokens - tokens < 400
    assert engine.batches == batches + 1  # the queued one never reached the model
    _, metrics = open_server.http("GET", "/metrics")
    assert "tuneforge_cancelled_requests_total 2" in metrics
    assert 'tuneforge_requests_total{path="/v1/chat/completions",status="499"} 2' in metrics
    assert "tuneforge_unhandled_errors_total 0" in metrics
