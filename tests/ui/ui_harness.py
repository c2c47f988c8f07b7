"""Helpers of the UI tests: the server with the UI, data files, a random adapter, and waiting
on a page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, via Selenium).

``TUNEFORGE_UI_SCREENSHOTS=DIR`` makes ``screenshot`` save each page into DIR (docs/ holds the
ones taken so).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BASE_NAME = "tiny"


def write_jsonl(path: Path, records: list, bad_lines: dict[int, str] | None = None) -> Path:
    """Write records as JSONL; ``bad_lines`` puts raw text at those 1-based line numbers."""
    lines = [json.dumps(record) for record in records]
    for number, text in sorted((bad_lines or {}).items()):
        lines.insert(number - 1, text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
        if "lora_" in name:
            param.data.normal_(0, 0.5)
    return save_adapter(peft_model, out)


@dataclass
class UiServer:
    """A running server with the UI: its URL, runs folder, app and API key."""

    url: str
    runs: Path
    app: object
    api_key: str | None

    def request(
        self, method: str, path: str, body=None, headers: dict | None = None, key: bool = True
    ) -> tuple[int, str, dict]:
        """(status, body text, response headers) of a raw request."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key and self.api_key:
            sent.setdefault("Authorization", f"Bearer {self.api_key}")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)


@contextlib.contextmanager
def run_ui_server(model_dir: Path, runs: Path, api_key=None, store=None, adapters=None):
    """The app ``tuneforge ui`` builds (``create_app`` + ``mount_ui``), on a free loopback port
    in a thread."""
    from tuneforge.adapters import AdapterRegistry
    from tuneforge.cli.ui_commands import compare_parser
    from tuneforge.models import load_model
    from tuneforge.serve import Engine, ServeSettings, create_app, serve_in_thread
    from tuneforge.serve.retrieval import build_retriever
    from tuneforge.ui import UiSettings, mount_ui

    runs.mkdir(parents=True, exist_ok=True)
    loaded = load_model(str(model_dir))
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    for name, folder in (adapters or {}).items():
        registry.load(name, folder)
    settings = ServeSettings(model_name=BASE_NAME, api_key=api_key, adapter_roots=[runs])
    engine = Engine(registry, settings.max_batch_size, settings.max_queue)
    ui = UiSettings(
        runs=runs,
        stores=[store] if store else [],
        model=str(model_dir),
        compare_parser=compare_parser(),
    )
    retriever = build_retriever(store) if store else None
    app = create_app(engine, settings, retriever=retriever)
    assert mount_ui(app, ui, retriever)
    try:
        with serve_in_thread(app) as url:
            yield UiServer(url=url, runs=runs, app=app, api_key=api_key)
    finally:
        app.state.ui.jobs.stop_all()


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install -y {package} (make test does it as root)"
    return None


def wait_for(condition, timeout: float = 60, every: float = 0.2, what: str = "the condition"):
    """Call ``condition()`` until it returns something truthy; return that, or fail."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as err:  # the page is mid-render: stale or missing elements
            last_error = err
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} (last error: {last_error})"
    )


def open_page(driver, server: UiServer, page: str) -> None:
    """Load /ui/PAGE and wait until its script has drawn it."""
    driver.get(f"{server.url}/ui/{page}")
    wait_for(
        lambda: driver.execute_script("return document.body.dataset.ready") == page,
        what=f"/ui/{page} to render",
    )


def screenshot(driver, name: str) -> None:
    """Save ``ui-NAME.png`` into $TUNEFORGE_UI_SCREENSHOTS when it is set."""
    folder = os.environ.get("TUNEFORGE_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(Path(folder) / f"ui-{name}.png"))
