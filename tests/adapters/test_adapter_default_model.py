"""On the real default model (slow): hot swap and a mixed-adapter batch, greedy."""

from __future__ import annotations

import pytest
from adapter_assets import make_lora

from tuneforge.adapters import AdapterRegistry
from tuneforge.generation import GenerationSettings
from tuneforge.models import load_model


@pytest.mark.slow
def test_mixed_batch_on_the_default_model(default_model_dir, tmp_path):
    first = make_lora(default_model_dir, tmp_path / "one", seed=1, r=16)
    loaded = load_model(str(default_model_dir), dtype="float32", device="cpu", progress=False)
    registry = AdapterRegistry(loaded.model, loaded.tokenizer)
    registry.load("one", first)
    settings = GenerationSettings(max_new_tokens=8)
    rows = [
        ([{"role": "user", "content": "What is the capital of France?"}], None),
        ([{"role": "user", "content": "Name a colour."}], "one"),
    ]
    alone = [registry.generate(messages, adapter, settings) for messages, adapter in rows]
    batch = registry.generate_batch(rows, settings)
    assert [r.text for r in batch] == [r.text for r in alone]
    assert "Paris" in alone[0].text
    registry.unload("one")
    assert registry.names() == []
