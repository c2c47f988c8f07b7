"""Who may use the UI: the API key on every page, asset and API call (401 without it), writes
only from the UI's own pages, and no UI at all on a server bound beyond loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ui_harness import open_page, run_ui_server, screenshot, wait_for

KEY = "ui-secret"
PATHS = [
    "/ui",
    "/ui/train",
    "/ui/data",
    "/ui/playground",
    "/ui/compare",
    "/ui/static/app.js",
    "/ui/static/app.css",
    "/ui/api/info",
    "/ui/api/runs",
    "/ui/api/config-schema",
    "/ui/api/playground",
    "/ui/api/compare/options",
]


@pytest.fixture(scope="module")
def keyed_server(tiny_model_dir, tmp_path_factory):
    with run_ui_server(tiny_model_dir, tmp_path_factory.mktemp("keyed") / "runs", KEY) as s:
        yield s


@pytest.mark.parametrize("path", PATHS)
def test_every_page_and_api_call_needs_the_key(keyed_server, path):
    status, body, _ = keyed_server.request("GET", path, key=False)
    assert status == 401
    if path.startswith("/ui/api/"):
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
    else:
        assert 'type="password"' in body  # the form that asks for the key
    status, _, _ = keyed_server.request("GET", path, headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, _, _ = keyed_server.request(
        "GET", path, headers={"Cookie": "tuneforge_ui_key=nope"}, key=False
    )
    assert status == 401
    assert keyed_server.request("GET", path)[0] == 200  # Bearer key
    status, _, _ = keyed_server.request(
        "GET", path, headers={"Cookie": f"tuneforge_ui_key={KEY}"}, key=False
    )
    assert status == 200


def test_writes_need_the_key_and_the_ui_header(keyed_server):
    body = {"name": "r", "values": {"lr": "-1"}}
    ui = {"X-Tuneforge-UI": "1"}
    assert keyed_server.request("POST", "/ui/api/train/plan", body, ui, key=False)[0] == 401
    status, text, _ = keyed_server.request("POST", "/ui/api/train/plan", body)
    assert status == 403 and "X-Tuneforge-UI" in json.loads(text)["error"]["message"]
    foreign = {**ui, "Origin": "http://attacker.example"}
    assert keyed_server.request("POST", "/ui/api/train/plan", body, foreign)[0] == 403
    status, text, _ = keyed_server.request("POST", "/ui/api/train/plan", body, ui)
    assert status == 422 and json.loads(text)["error"]["param"] == "lr"


def test_the_guards_of_the_server_hold_for_the_ui(keyed_server):
    # DNS rebinding: a Host that does not name this server is refused before the key check.
    status, _, _ = keyed_server.request("GET", "/ui/train", headers={"Host": "attacker.example"})
    assert status == 400
    # The page allows only its own scripts (Content-Security-Policy).
    status, _, headers = keyed_server.request("GET", "/ui/train")
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]


def test_no_ui_on_a_server_bound_beyond_loopback(tiny_model_dir, tmp_path):
    import urllib.error
    import urllib.request

    from tuneforge.adapters import AdapterRegistry
    from tuneforge.models import load_model
    from tuneforge.serve import Engine, ServeSettings, create_app, serve_in_thread
    from tuneforge.ui import mount_ui, ui_settings_for_server

    loaded = load_model(str(tiny_model_dir))
    engine = Engine(AdapterRegistry(loaded.model, loaded.tokenizer), 1, 1)
    settings = ServeSettings(host="0.0.0.0", api_key=KEY, adapter_roots=[tmp_path])
    app = create_app(engine, settings)
    assert not mount_ui(app, ui_settings_for_server(settings, str(tiny_model_dir)))
    with serve_in_thread(app) as url:
        port = url.rsplit(":", 1)[1]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/ui/train", headers={"Authorization": f"Bearer {KEY}"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 404


def test_a_serve_servers_ui_works_on_its_adapter_root(tiny_model_dir, tmp_path):
    from tuneforge.serve import ServeSettings
    from tuneforge.ui import ui_settings_for_server

    settings = ServeSettings(adapter_roots=[tmp_path], store=tmp_path / "store")
    ui = ui_settings_for_server(settings, "default")
    assert (ui.runs, ui.stores, ui.model) == (tmp_path.resolve(), [tmp_path / "store"], "default")
    assert ui_settings_for_server(ServeSettings(), "m").runs.name == "runs"


def test_the_browser_asks_for_the_key_once_then_opens_the_pages(browser, keyed_server):
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(f"{keyed_server.url}/ui/train")
    browser.find_element(By.ID, "key").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: "not accepted" in browser.find_element(By.ID, "wrong").text, what="refusal")
    box = browser.find_element(By.ID, "key")
    box.send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready") == "train")
    assert not browser.find_elements(By.CSS_SELECTOR, ".error-box")
    open_page(browser, keyed_server, "playground")  # the cookie opens every page
    browser.get(f"{keyed_server.url}/ui/data")
    browser.delete_all_cookies()
    browser.get(f"{keyed_server.url}/ui/data")
    assert browser.find_elements(By.ID, "key")
    screenshot(browser, "login")


def test_tuneforge_ui_command_serves_the_pages_behind_its_key(tiny_model_dir, tmp_path):
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "tuneforge", "ui", "--model", str(tiny_model_dir)]
    command += ["--runs", str(runs), "--port", str(port), "--api-key", KEY]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy()
    )

    def get(path: str, key: str | None) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status = get("/ui/train", None)
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "tuneforge ui did not start"
                time.sleep(0.5)
        assert status == 401
        assert get("/ui/train", KEY) == 200
        assert get("/ui/api/runs", None) == 401
        assert get("/ui/api/runs", KEY) == 200
        assert runs.is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert f"tuneforge UI at http://127.0.0.1:{port}/ui" in output
