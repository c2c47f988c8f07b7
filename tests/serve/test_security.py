"""What is reachable over HTTP, checked claim by claim against docs/serve.md's security section:
the Host check (DNS rebinding), the endpoint list, no schema pages."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from conftest import run_server


def host_status(server, host: str | None) -> tuple[int, dict]:
    status, text = server.raw("GET", "/v1/models", headers={"Host": host})
    return status, json.loads(text)


def test_host_header_must_name_this_server(server):
    """Item 11: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    port = server.url.rsplit(":", 1)[1]
    for host in [
        f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "localhost", "LocalHost",
        f"[::1]:{port}", "[::1]",
    ]:  # fmt: skip
        assert host_status(server, host)[0] == 200, host
    for host in [
        f"evil.example:{port}", "evil.example", "127.0.0.1.nip.io", f"localhost.evil.example:{port}",
        "127.0.0.2", "[::2]", "", "127.0.0.1:port", "local host",
    ]:  # fmt: skip
        status, body = host_status(server, host)
        assert status == 400, host
        error = body["error"]
        assert error["code"] == "host_not_allowed" and error["type"] == "invalid_request_error"
        assert "--allowed-host" in error["message"]
    # No Host header: HTTP/1.1 requires one (uvicorn refuses it); HTTP/1.0 reaches the check.
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400"
    assert json.loads(text)["error"]["code"] == "host_not_allowed"
    # /health too: a rebinding page learns nothing from it either.
    status, _ = server.raw("GET", "/health", headers={"Host": "evil.example"})
    assert status == 400
    _, metrics = server.http("GET", "/metrics")
    assert 'tuneforge_requests_total{path="/v1/models",status="400"}' in metrics


def test_allowed_host_adds_names_and_star_allows_all(tiny_model_dir):
    with run_server(tiny_model_dir, api_key=None, allowed_hosts=["API.example"]) as server:
        assert host_status(server, "api.example:443")[0] == 200
        assert host_status(server, "localhost")[0] == 200
        assert host_status(server, "evil.example")[0] == 400
    with run_server(tiny_model_dir, api_key=None, allowed_hosts=["*"]) as server:
        assert host_status(server, "evil.example")[0] == 200


def test_host_rule_for_other_binds():
    from tuneforge.serve.guards import HostRule

    wildcard = HostRule.for_bind("0.0.0.0", [])
    for host in ["192.168.1.5:8000", "[fe80::1]:8000", "10.0.0.1", "localhost:8000",
                 socket.gethostname(), f"{socket.gethostname().upper()}:8000"]:  # fmt: skip
        assert wildcard.allows(host), host
    for host in ["evil.example", "evil.example:8000", None]:
        assert not wildcard.allows(host), host
    one_address = HostRule.for_bind("192.168.1.5", ["gpu-box.lan"])
    assert one_address.allows("192.168.1.5:8000") and one_address.allows("GPU-BOX.lan")
    assert not one_address.allows("evil.example")
    loopback = HostRule.for_bind("127.0.0.1", [])
    assert not loopback.allows("192.168.1.5")  # only the loopback names


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"])
def test_no_schema_or_docs_pages(server, path):
    status, text = server.http("GET", path, auth=False)
    assert status == 404, path
    assert json.loads(text)["error"]["message"]


def security_section() -> str:
    text = (Path(__file__).parents[2] / "docs" / "serve.md").read_text(encoding="utf-8")
    return text.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]


def test_security_section_lists_exactly_the_endpoints_served(server):
    """The doc's endpoint table is the app's route table, with the API key column right."""
    from fastapi.routing import APIRoute

    from tuneforge.serve.app import PATHS

    documented = {}
    for line in security_section().splitlines():
        match = re.match(r"\| `(GET|POST) (/\S*)` \| (needed|not needed) \|", line)
        if match:
            documented[(match.group(1), match.group(2))] = match.group(3) == "needed"

    def endpoints(routes):
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI >= 0.16x nests them
            if included is not None:
                yield from endpoints(included.routes)
            elif isinstance(route, APIRoute):
                yield from ((method, route.path) for method in route.methods)

    served = set(endpoints(server.app.routes))
    assert set(documented) == served
    assert {path for _, path in served} == PATHS  # the request counter labels each of them
    for (method, path), needs_key in documented.items():
        status, _ = server.http(method, path, {} if method == "POST" else None, auth=False)
        assert (status == 401) == needs_key, (method, path, status)


def test_health_reveals_status_queue_depth_and_adapter_names_only(server):
    status, text = server.http("GET", "/health", auth=False)
    assert status == 200
    assert json.loads(text) == {"status": "ok", "queue_depth": 0, "adapters": ["a1"]}


def test_a_failed_generation_says_nothing_of_the_exception(tiny_model_dir, monkeypatch):
    """Worker failures: a 500 (or, mid-stream, an error event) without the exception's text;
    counted in /metrics."""
    with run_server(tiny_model_dir, api_key=None) as server:

        def broken_decode(*args):
            raise RuntimeError("CUDA error at /opt/secret/kernel.cu")

        for entry in ("decode", "join", "step"):  # the plain path and the fast path
            monkeypatch.setattr(server.engine.registry, entry, broken_decode)
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
        status, text = server.http("POST", "/v1/chat/completions", body)
        assert status == 500
        error = json.loads(text)["error"]
        assert error["code"] == "server_error" and "secret" not in error["message"]
        status, text = server.http("POST", "/v1/chat/completions", {**body, "stream": True})
        assert status == 200  # the stream had started
        events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        failure = json.loads(events[-2])["error"]
        assert failure["code"] == "server_error" and "secret" not in failure["message"]
        _, metrics = server.http("GET", "/metrics")
        assert "tuneforge_unhandled_errors_total 2" in metrics
