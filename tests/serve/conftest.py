"""Fixtures for the server tests: random LoRA adapters on the tiny model, and the real server
(uvicorn on a free loopback port, in a thread) around an Engine."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

API_KEY = "test-key"
BASE_NAME = "tiny"


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """Save a random LoRA adapter (non-zero B, so it changes the output) for the tiny model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.adapters import save_adapter

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "lora_" in name:  # big enough to change greedy tokens of a random model
            param.data.normal_(0, 0.5)
    return save_adapter(peft_model, out)


@pytest.fixture(scope="session")
def adapter_root(tiny_model_dir, tmp_path_factory) -> Path:
    """A folder holding adapters ``a1``, ``a2``, ``a3`` for the tiny model."""
    root = tmp_path_factory.mktemp("adapters")
    for seed, name in enumerate(["a1", "a2", "a3"], start=1):
        make_adapter(tiny_model_dir, root / name, seed)
    return root


@dataclass
class Server:
    """A running server: its URL, engine, app and raw HTTP access."""

    url: str
    engine: object
    api_key: str | None
    app: object = None

    def client(self, api_key: str | None = None, **kwargs):
        """An official ``openai`` client for this server (no retries)."""
        import openai

        key = api_key or self.api_key or "unused"
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)

    def http(
        self, method: str, path: str, body=None, auth: bool = True, timeout: float = 60
    ) -> tuple[int, str]:
        """(status, body text) of a raw request; ``body`` is bytes (sent as is) or JSON data."""
        headers = {"Content-Type": "application/json"}
        if auth and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
        timeout: float = 60,
    ) -> tuple[int, str]:
        """(status, body text) of a request sent exactly as given (``http.client``).

        Header values may be bytes (sent as they are); a ``Host`` in ``headers`` replaces the
        default one, ``"Host": None`` sends none. The API key is added unless ``headers`` holds
        an ``Authorization``.
        """
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        headers = dict(headers or {})
        if self.api_key and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            connection.putrequest(method, path, skip_host="Host" in headers)
            for name, value in headers.items():
                if value is not None:
                    connection.putheader(name, value)
            if body is not None:
                connection.putheader("Content-Type", "application/json")
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def run_server(
    model_dir: Path,
    adapters: dict[str, Path] | None = None,
    roots: list[Path] | None = None,
    api_key: str | None = API_KEY,
    retriever=None,
    dtype: str = "auto",
    **settings,
):
    """Load the model (in ``dtype``), start uvicorn on 127.0.0.1:<free port> in a thread, yield
    a Server."""
    from tuneforge.adapters import AdapterRegistry
    from tuneforge.models import load_model
    from tuneforge.serve import Engine, ServeSettings, create_app, serve_in_thread

    loaded = load_model(str(model_dir), dtype=dtype)
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    for name, folder in (adapters or {}).items():
        registry.load(name, folder)
    config = ServeSettings(
        model_name=BASE_NAME, api_key=api_key, adapter_roots=roots or [], **settings
    )
    engine = Engine(registry, config.max_batch_size, config.max_queue)
    app = create_app(engine, config, retriever=retriever)
    with serve_in_thread(app) as url:
        yield Server(url=url, engine=engine, api_key=api_key, app=app)


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapter_root):
    """The shared server: base ``tiny`` + adapter ``a1``, API key, adapters hot-loadable from
    ``adapter_root``."""
    with run_server(
        tiny_model_dir, {"a1": adapter_root / "a1"}, [adapter_root], max_batch_size=4
    ) as running:
        yield running


@pytest.fixture(scope="session")
def reference(tiny_model_dir, adapter_root):
    """``reference(messages, adapter=None, max_tokens=..)``: the reply of ``tuneforge generate``
    (``generation.generate`` on the base, or on the base with the adapter attached), greedy."""
    from tuneforge.adapters import attach_adapter
    from tuneforge.generation import GenerationSettings, generate
    from tuneforge.models import load_model

    models: dict[str | None, tuple] = {}

    def reply(messages: list[dict], adapter: str | None = None, max_tokens: int = 12):
        if adapter not in models:
            loaded = load_model(str(tiny_model_dir))
            model = loaded.model
            if adapter is not None:
                model = attach_adapter(model, adapter_root / adapter)
            models[adapter] = (model, loaded.tokenizer)
        model, tokenizer = models[adapter]
        return generate(model, tokenizer, messages, GenerationSettings(max_new_tokens=max_tokens))

    return reply
