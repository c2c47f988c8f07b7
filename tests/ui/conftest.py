"""Fixtures for the UI tests: the server with the UI (tiny model, a random adapter, a real RAG
store), data files, and headless Chromium driven by Selenium (helpers in ``ui_harness``).

The browser tests need Debian's ``chromium`` and ``chromium-driver`` and the ``selenium``
package (``make test`` installs them when it can); without them they are skipped with the
reason, never passed silently.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from ui_harness import (
    CHROMEDRIVER,
    CHROMIUM,
    browser_missing,
    make_adapter,
    run_ui_server,
    write_jsonl,
)

DOCS = {
    "warranty.md": "# Warranty\n\nThe Lumen desk lamp has a warranty period of 3 years from the "
    "date of purchase. Repairs under warranty are free of charge.\n",
    "shipping.md": "# Shipping\n\nOrders to Oslo ship within 2 days. Shipping to Paris takes 5 "
    "days and costs 12 euros.\n",
}

CHATS = [
    {
        "messages": [
            {"role": "user", "content": f"Order {n} lamps to Oslo"},
            {"role": "assistant", "content": f'{{"item": "lamp", "quantity": {n}}}'},
        ]
    }
    for n in range(1, 13)
]


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory) -> Path:
    """12 valid chat records."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "chats.jsonl", CHATS)


@pytest.fixture(scope="session")
def broken_chat_file(tmp_path_factory) -> Path:
    """The chats with invalid JSON on line 3 and a record of the wrong shape on line 6."""
    return write_jsonl(
        tmp_path_factory.mktemp("data") / "broken.jsonl",
        CHATS,
        {3: '{"messages": [', 6: json.dumps({"messages": "not a list"})},
    )


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory) -> Path:
    """A real RAG store (bundled embedding model) holding the two DOCS."""
    from tuneforge.rag import RagStore

    docs = tmp_path_factory.mktemp("docs")
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    folder = tmp_path_factory.mktemp("stores") / "manuals"
    RagStore(folder).ingest(docs, progress=False)
    return folder


@pytest.fixture(scope="module")
def ui_server(tiny_model_dir, store_dir, tmp_path_factory):
    """The UI without a key: base ``tiny`` + adapter ``a1``, the ``manuals`` store."""
    runs = tmp_path_factory.mktemp("ui-runs")
    adapter = make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "a1", seed=1)
    with run_ui_server(
        tiny_model_dir, runs / "runs", store=store_dir, adapters={"a1": adapter}
    ) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's) under chromedriver, with a fresh profile; skipped with the
    reason when either is missing."""
    reason = browser_missing()
    if reason:
        pytest.skip(f"browser tests skipped: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tuneforge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1360,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
