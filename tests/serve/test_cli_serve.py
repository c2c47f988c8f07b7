"""``tuneforge serve`` as a user runs it: a subprocess on loopback, started from ``/`` (where
the old default adapter root let HTTP clients load any folder), its Host check, and a graceful
SIGTERM that lets the request in flight finish (last: it stops the server)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Server, free_port
from tuneforge.cli import main

AUTH = {"Authorization": "Bearer cli-key"}


def _request(
    port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None
) -> tuple[int, str]:
    """A request to the CLI's server, with no API key unless ``headers`` carries one."""
    server = Server(url=f"http://127.0.0.1:{port}", engine=None, api_key=None)
    return server.raw(method, path, None if body is None else json.dumps(body).encode(), headers)


@pytest.fixture(scope="module")
def cli_server(tiny_model_dir, adapter_root):
    """``tuneforge serve`` started from ``/`` with a key and a start adapter, no --adapter-root."""
    port = free_port()
    env = {
        **os.environ,
        "TUNEFORGE_API_KEY": "cli-key",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    # A bare DIR: the adapter is named after its folder, a1.
    command = [
        sys.executable, "-m", "tuneforge.cli", "serve",
        "--model", str(tiny_model_dir), "--served-model-name", "tiny",
        "--adapter", str(adapter_root / "a1"), "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if _request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_started_from_root_without_adapter_root_loads_nothing_over_http(cli_server, adapter_root):
    """Item 7: the working directory is no adapter root; /proc/self reveals nothing."""
    _, port = cli_server
    answers = []
    for path in ["/proc/self", "/", str(adapter_root / "a2"), "/no/such/folder"]:
        status, text = _request(
            port, "POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": path}, AUTH
        )
        assert status == 403, (path, text)
        error = json.loads(text)["error"]
        assert error["code"] == "adapter_loading_disabled"
        assert "--adapter-root" in error["message"]
        assert "/proc" not in error["message"] and str(adapter_root) not in error["message"]
        answers.append(text)
    assert len(set(answers)) == 1  # the same answer whatever the path
    assert _request(port, "GET", "/v1/models")[0] == 401
    status, text = _request(port, "GET", "/v1/models", headers=AUTH)
    assert [card["id"] for card in json.loads(text)["data"]] == ["tiny", "a1"]


def test_cli_server_on_loopback_serves_the_web_ui_behind_its_key(cli_server):
    _, port = cli_server
    assert _request(port, "GET", "/ui/train")[0] == 401
    status, text = _request(port, "GET", "/ui/train", headers=AUTH)
    assert status == 200 and "<html" in text.lower()


def test_cli_server_answers_only_its_own_host_names(cli_server):
    """Item 11: a DNS-rebinding Host is refused; the loopback names are served."""
    _, port = cli_server
    for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"]:
        assert _request(port, "GET", "/health", headers={"Host": host})[0] == 200, host
    for host in [f"evil.example:{port}", "127.0.0.1.nip.io", f"localhost.evil.example:{port}"]:
        status, text = _request(port, "GET", "/health", headers={"Host": host})
        assert status == 400, host
        assert json.loads(text)["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--adapter-root", "/", "--adapter-root /: "),
        ("--adapter-root", str(Path.home()), f"--adapter-root {Path.home().resolve()}: "),
        ("--adapter-root", "/no/such/folder", "--adapter-root /no/such/folder: no such folder"),
        ("--api-key", "clé", "--api-key: "),
        ("--max-body-bytes", "0", "--max-body-bytes must be"),
    ],
)
def test_unsafe_settings_are_refused_at_start(capsys, option, value, expected):
    """Refused before the model loads (the model path here does not even exist)."""
    code = main(["serve", "--model", "/no/such/model", option, value])
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "/no/such/model" not in err


def test_serve_command_drains_the_request_in_flight_on_sigterm(cli_server):
    process, port = cli_server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {
        "model": "a1",
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 150,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body), {**AUTH, "Content-Type": "application/json"}
    )  # fmt: skip
    response = connection.getresponse()
    assert response.status == 200
    first_event = response.readline()  # the request is being decoded now
    assert first_event.startswith(b"data: ")
    threading.Timer(0.05, process.send_signal, [signal.SIGTERM]).start()
    rest = response.read().decode()
    events = [line[6:] for line in rest.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] >= 1
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit shows the signal.
    assert process.wait(60) in (0, -signal.SIGTERM)
    log = process.stdout.read().decode()
    assert "Application shutdown complete" in log
    assert "adapter loading over HTTP: off" in log


def test_cli_defaults_are_the_settings_defaults():
    """The options' defaults (shown in --help) are ServeSettings' own."""
    from tuneforge.cli import build_parser
    from tuneforge.serve import ServeSettings

    args = build_parser().parse_args(["serve"])
    settings = ServeSettings()
    assert args.host == settings.host == "127.0.0.1"
    assert args.max_body_bytes == settings.max_body_bytes
    assert args.max_batch_size == settings.max_batch_size
    assert args.max_queue == settings.max_queue
    assert args.max_tokens == settings.default_max_tokens
    assert args.adapter_root == settings.adapter_roots == []
    assert args.allowed_host == settings.allowed_hosts == []
