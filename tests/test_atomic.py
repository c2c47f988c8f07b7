"""Atomic writes: complete files only, and the user's umask rather than mkstemp's private 0600."""

from __future__ import annotations

import os
import stat

import pytest

from tuneforge.atomic import staged_dir, write_json, write_text


@pytest.fixture
def umask():
    """Set a umask for one test and put the old one back."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_written_files_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    write_text(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "b.json", {"x": 1})
    with staged_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("x")
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert _mode(tmp_path / "a.txt") == file_mode
    assert _mode(tmp_path / "b.json") == file_mode
    assert _mode(tmp_path / "folder") == dir_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "folder"]


def test_a_failed_write_leaves_no_file(tmp_path):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), staged_dir(tmp_path / "out"):
        raise Boom
    write_text(tmp_path / "keep.txt", "old")
    with pytest.raises(TypeError):
        write_text(tmp_path / "keep.txt", 123)  # type: ignore[arg-type]
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
