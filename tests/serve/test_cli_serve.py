"""``tuneforge serve`` as a user runs it: a subprocess on loopback, and a graceful SIGTERM that
lets the request in flight finish."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

from conftest import free_port


def _get(port: int, path: str, headers: dict | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_serve_command_drains_the_request_in_flight_on_sigterm(tiny_model_dir, adapter_root):
    port = free_port()
    env = {**os.environ, "TUNEFORGE_API_KEY": "cli-key", "PYTHONUNBUFFERED": "1"}
    # A bare DIR: the adapter is named after its folder, a1.
    command = [
        sys.executable, "-m", "tuneforge.cli", "serve",
        "--model", str(tiny_model_dir), "--served-model-name", "tiny",
        "--adapter", str(adapter_root / "a1"), "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if _get(port, "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        auth = {"Authorization": "Bearer cli-key"}
        assert _get(port, "/v1/models")[0] == 401
        status, text = _get(port, "/v1/models", auth)
        assert status == 200
        assert [card["id"] for card in json.loads(text)["data"]] == ["tiny", "a1"]

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
            "POST", "/v1/chat/completions", json.dumps(body), {**auth, "Content-Type": "application/json"}
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
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
