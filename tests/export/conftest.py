"""Fixtures for the GGUF export tests: tiny family models, and llama.cpp or a visible skip."""

from __future__ import annotations

import pytest
from family_assets import family_model

from tuneforge.export.llama_cpp_check import llama_cpp_missing


@pytest.fixture(scope="session")
def llama_cpp_runtime() -> None:
    """Skip (with the reason, shown by ``-ra``) when llama.cpp cannot run here."""
    reason = llama_cpp_missing()
    if reason:
        pytest.skip(f"llama.cpp runtime missing: {reason} (make install-gguf builds it)")


@pytest.fixture(scope="session")
def family_models():
    """``family -> (model, tokenizer)``, each built once per session on first use."""
    built: dict[str, tuple] = {}

    def get(family: str):
        if family not in built:
            built[family] = family_model(family)
        return built[family]

    return get
