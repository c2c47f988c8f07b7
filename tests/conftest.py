"""Shared fixtures: an isolated cache per test, tiny offline models, the real default (slow)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tokenizer, save_tiny_model

# The real default model is immutable once converted, so slow tests share one cache for it
# (converting takes ~30 s) instead of rebuilding it per test.
SHARED_DEFAULT_HOME = Path.home() / ".cache" / "tuneforge-test-default"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty ``$TUNEFORGE_HOME``."""
    home = tmp_path / "tuneforge-home"
    monkeypatch.setenv("TUNEFORGE_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama + tokenizer folder (read-only by convention: copy it to modify)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private, writable copy of the tiny model folder."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-copy"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny offline tokenizer (ChatML template, pad distinct from EOS)."""
    return build_tokenizer()


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real bundled default model folder, converted once into a shared test cache."""
    from tuneforge.models.bundled import ensure_default_model

    return ensure_default_model(SHARED_DEFAULT_HOME, progress=False)


@pytest.fixture
def compiled_calls(monkeypatch):
    """The compiled decode steps run since the fixture began: True for each that ran compiled
    (``CompiledStep`` gave hidden states), False for each that fell back to eager. Turns
    compiling off and resets dynamo afterwards (one cache entry per model graph; it keeps 8)."""
    import torch

    from tuneforge.generation.compiled_step import CompiledStep, compile_decode_steps

    calls = []
    run = CompiledStep.__call__

    def counted(self, input_ids, cache):
        hidden = run(self, input_ids, cache)
        calls.append(hidden is not None)
        return hidden

    monkeypatch.setattr(CompiledStep, "__call__", counted)
    yield calls
    compile_decode_steps(False)
    torch._dynamo.reset()
