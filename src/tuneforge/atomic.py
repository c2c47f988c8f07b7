"""Atomic writes: write to a temporary name beside the target, then rename over it.

A crash or a kill never leaves a half-written file or folder where a reader would find it.
Temporary files and folders are created with the user's umask (as ``open`` and ``mkdir`` would
make them), not the private 0600/0700 of ``tempfile.mkstemp``/``mkdtemp``: the renamed result is
an ordinary file that another user's service (Ollama, a web server) can read when the umask allows.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _temporary_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")


def create_temporary_file(final: Path) -> tuple[int, Path]:
    """Create a new empty file beside ``final`` for an atomic write; return ``(fd, path)``.

    The file is created with mode 0666 minus the umask, so after ``os.replace`` it has the
    permissions a plain ``open(final, "w")`` would have given it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temporary_name(final)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # 48 random bits collided: draw again
            continue


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    path = Path(path)
    fd, tmp = create_temporary_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def staged_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success rename it to ``final``.

    Args:
        final: the folder to create.
        replace: if True an existing ``final`` is replaced (the old one is removed only after the
            new one is complete); if False and ``final`` appears meanwhile (another process won
            the race), the staged copy is discarded and ``final`` is kept.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temporary_name(final)
        try:
            tmp.mkdir(mode=0o777)  # minus the umask, like any folder the user makes
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        if final.exists():
            if not replace:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
