"""What ``/v1/load_lora_adapter`` may load, and what its answers tell a client about the disk.

Loading over HTTP is off unless the operator names adapter roots; a root of ``/`` or the home
folder is refused; paths outside the roots all get one answer that names no path, so a client
cannot learn which paths exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_server
from tuneforge.errors import ConfigError
from tuneforge.serve import ServeSettings, check_adapter_path
from tuneforge.serve.config import AdapterPathError


def load(server, path: str, name: str = "x") -> tuple[int, dict]:
    status, text = server.http(
        "POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}
    )
    return status, json.loads(text)


def test_paths_outside_the_roots_get_one_answer_naming_no_path(server, adapter_root, tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "folder").mkdir(parents=True)
    (outside / "file.txt").write_text("secret")
    link = adapter_root / "link-out-roots"  # the root is shared; this test's own link
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    paths = [
        "/proc/self",
        "/etc",
        "/etc/passwd",
        "/no/such/folder",
        str(outside / "folder"),
        str(outside / "file.txt"),
        str(outside / "missing"),
        str(adapter_root / ".." / "x"),
        str(link),
        str(link / "folder"),
        "~",
    ]
    answers = set()
    for path in paths:
        status, body = load(server, path)
        assert status == 403, path
        assert body["error"]["code"] == "adapter_path_not_allowed"
        assert body["error"]["param"] == "lora_path"
        message = body["error"]["message"]
        for leaked in ("/proc", "/etc", str(tmp_path), str(outside), "elsewhere", str(Path.home())):
            assert leaked not in message, (path, message)
        answers.add(json.dumps(body))
    assert len(answers) == 1, answers


def test_check_adapter_path_resolves_inside_the_roots(adapter_root):
    assert check_adapter_path(str(adapter_root / "a1"), [adapter_root]) == adapter_root / "a1"
    assert check_adapter_path(adapter_root / "x" / ".." / "a2", [adapter_root]) == (
        adapter_root / "a2"
    )
    with pytest.raises(AdapterPathError) as caught:
        check_adapter_path("/etc", [adapter_root])
    assert "/etc" not in str(caught.value)
    with pytest.raises(AdapterPathError):
        check_adapter_path(adapter_root / "a1", [])


@pytest.mark.parametrize("root", ["/", "HOME", "HOME_PARENT"])
def test_adapter_root_that_exposes_the_disk_is_refused(root, tmp_path, monkeypatch):
    home = tmp_path / "home" / "user"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    folder = {"/": Path("/"), "HOME": home, "HOME_PARENT": home.parent}[root]
    with pytest.raises(ConfigError) as caught:
        ServeSettings(adapter_roots=[folder])
    assert f"--adapter-root {folder}: too wide" in str(caught.value)
    (home / "runs").mkdir()
    assert ServeSettings(adapter_roots=[home / "runs"]).adapter_roots == [home / "runs"]


def test_adapter_root_must_be_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        ServeSettings(adapter_roots=[tmp_path / "missing"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        ServeSettings(adapter_roots=[tmp_path / "file"])


def test_without_roots_loading_is_off(tiny_model_dir, adapter_root):
    with run_server(tiny_model_dir, api_key=None) as server:
        for path in [str(adapter_root / "a2"), "/proc/self"]:
            status, body = load(server, path)
            assert status == 403
            assert body["error"]["code"] == "adapter_loading_disabled"
            assert "--adapter-root" in body["error"]["message"]
            assert str(adapter_root) not in body["error"]["message"]
