"""What the UI works on (``UiSettings``) and what it holds while it runs (``UiState``)."""

from __future__ import annotations

import argparse
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError
from tuneforge.ui.jobs import Jobs

# A run or comparison name: one folder under the runs folder, never a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
# Where the UI keeps what it writes besides run folders: the configs and logs of its jobs.
UI_FOLDER = ".ui"
# Uploaded data files, under the runs folder.
UPLOADS_FOLDER = "uploads"
# Comparisons started from the UI, under the runs folder.
COMPARE_FOLDER = "compare"


@dataclass
class UiSettings:
    """The folders the UI reads and writes.

    Attributes:
        runs: the runs folder: training runs started in the UI go to ``runs/NAME``, uploads to
            ``runs/uploads``, comparisons to ``runs/compare/NAME``; every run folder in it is
            listed, and its adapters can be tried in the playground.
        stores: RAG store folders the playground can answer from (one at a time).
        model: the model reference the data page tokenizes with, and the training form's
            default (the server's base model).
        compare_parser: the ``tuneforge compare`` argument parser (the CLI's): the compare
            page's form is read from it. None: the page lists reports but starts none.
    """

    runs: Path = Path("runs")
    stores: list[Path] = field(default_factory=list)
    model: str = "default"
    compare_parser: argparse.ArgumentParser | None = None

    def __post_init__(self) -> None:
        self.runs = Path(self.runs)
        self.stores = [Path(store) for store in self.stores]
        names = [store.name for store in self.stores]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"--store: two stores share a folder name ({', '.join(names)}); the playground "
                "names stores by folder name, so give each its own"
            )


def ui_settings_for_server(
    settings, model: str, compare_parser: argparse.ArgumentParser | None = None
) -> UiSettings:
    """The UI of a ``tuneforge serve`` server: its runs folder is the first adapter root (the
    playground can load those adapters), else ``runs``; its store is the server's ``--store``.

    Args:
        settings: the server's ``ServeSettings``.
        model: the base model reference the server loaded.
        compare_parser: see ``UiSettings``.
    """
    runs = settings.adapter_roots[0] if settings.adapter_roots else Path("runs")
    stores = [settings.store] if settings.store else []
    return UiSettings(runs=runs, stores=stores, model=model, compare_parser=compare_parser)


def checked_name(name: str, what: str = "run") -> str:
    """``name`` if it is a plain folder name (letters, digits, ``.``, ``_``, ``-``).

    Raises:
        ConfigError: it is empty, too long, or holds a path separator or other characters.
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"{what} name {name!r}: use 1-80 letters, digits, '.', '_' or '-' (it becomes a "
            "folder name), starting with a letter or digit"
        )
    return name


class UiState:
    """What the UI holds while the server runs: settings, jobs, loaded tokenizers, retrievers."""

    def __init__(self, settings: UiSettings) -> None:
        self.settings = settings
        self.jobs = Jobs()
        self.tokenizers: dict[str, Any] = {}
        self.retrievers: dict[str, Any] = {}  # store name -> retriever (serve.retrieval)
        self.active_store: str | None = None
        self.lock = threading.Lock()

    @property
    def runs(self) -> Path:
        return self.settings.runs

    def tokenizer(self, model: str):
        """The tokenizer of ``model`` (loaded once per reference)."""
        with self.lock:
            if model not in self.tokenizers:
                from tuneforge.models.loading import load_tokenizer, resolve_folder

                self.tokenizers[model] = load_tokenizer(resolve_folder(model, progress=False))
            return self.tokenizers[model]

    def store_folders(self) -> dict[str, Path]:
        """The RAG stores by folder name."""
        return {store.name: store for store in self.settings.stores}
