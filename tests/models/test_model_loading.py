import json

import pytest
import torch

from tuneforge.errors import ModelError
from tuneforge.generation import GenerationSettings, chat_messages, generate
from tuneforge.models import load_model, resolve_device, resolve_dtype
from tuneforge.models.device import native_bf16


def test_loads_tiny_folder(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    assert loaded.model.dtype == resolve_dtype("auto", torch.device("cpu"))
    assert loaded.tokenizer.pad_token_id != loaded.tokenizer.eos_token_id
    assert not loaded.model.training


def test_dtype_override(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert loaded.model.dtype == torch.bfloat16


def test_auto_dtype_on_cpu_is_bf16_only_where_native():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)
    assert resolve_device("cpu").type == "cpu"


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(str(tmp_path))


def test_truncated_safetensors(tiny_model_copy):
    weights = tiny_model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="model.safetensors: corrupt or truncated"):
        load_model(str(tiny_model_copy))


def test_unsupported_architecture(tiny_model_copy):
    config_path = tiny_model_copy / "config.json"
    config = json.loads(config_path.read_text())
    config["model_type"] = "vit"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelError, match="'vit' is not a causal language model"):
        load_model(str(tiny_model_copy))


def test_corrupt_gguf(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf file" * 64)
    with pytest.raises(ModelError, match="broken.gguf: not a readable GGUF file"):
        load_model(str(path))


def test_greedy_generation_is_deterministic_and_streams(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    pieces: list[str] = []
    settings = GenerationSettings(max_new_tokens=8)
    messages = chat_messages("hello", system="be brief")
    first = generate(loaded.model, loaded.tokenizer, messages, settings, on_text=pieces.append)
    second = generate(loaded.model, loaded.tokenizer, messages, settings)
    assert first.text == second.text
    assert "".join(pieces).strip() == first.text.strip()
    assert 1 <= first.completion_tokens <= 8
    assert first.prompt_tokens > 0


def test_settings_are_validated():
    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match="temperature"):
        GenerationSettings(temperature=-1)
