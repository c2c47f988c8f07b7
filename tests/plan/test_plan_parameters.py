"""Parameter counts from a config alone: the textbook case, published sizes, real models, peft."""

from __future__ import annotations

import pytest

from tuneforge.errors import ConfigError, ModelError
from tuneforge.plan import (
    ModelConfig,
    count_parameters,
    load_model_config,
    lora_parameter_count,
    percent_fewer,
    shipped_config_names,
)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_textbook_lora_count_on_a_1000x1000_linear():
    assert lora_parameter_count(1000, 1000, r=8) == 16_000
    assert round(percent_fewer(16_000, 1_000_000), 1) == 98.4


# Published totals (exact where the converted transformers checkpoints state them).
PUBLISHED = {
    "llama-7b": 6_738_415_616,  # "6.7B" (LLaMA, Table 2)
    "llama-13b": 13_015_864_320,  # "13.0B"
    "llama-65b": 65_285_660_672,  # "65.2B"
    "llama-2-70b": 68_976_648_192,  # "70B" (Llama 2, GQA with 8 kv heads)
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_configs_match_the_published_counts(name):
    assert count_parameters(load_model_config(name)).total == PUBLISHED[name]


def test_llama_7b_rounds_to_6_74b():
    assert round(count_parameters(load_model_config("llama-7b")).total / 1e9, 2) == 6.74


def test_every_shipped_config_validates():
    names = shipped_config_names()
    assert {"llama-7b", "llama-13b", "llama-65b", "llama-2-70b"} <= set(names)
    for name in names:
        config = load_model_config(name)
        assert config.hidden_size == config.num_attention_heads * config.head_dim
    assert load_model_config("llama-2-70b").num_key_value_heads == 8


def _tiny_models():
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    shape = dict(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    yield "llama-tied-gqa", LlamaConfig(**shape, tie_word_embeddings=True), LlamaForCausalLM
    yield (
        "llama-untied-bias",
        LlamaConfig(**shape, tie_word_embeddings=False, attention_bias=True, mlp_bias=True),
        LlamaForCausalLM,
    )
    yield "mistral", MistralConfig(**shape), MistralForCausalLM
    yield "qwen2", Qwen2Config(**shape, tie_word_embeddings=True), Qwen2ForCausalLM
    yield "qwen3", Qwen3Config(**shape, head_dim=16), Qwen3ForCausalLM


@pytest.mark.parametrize(
    ("name", "hf_config", "cls"), [pytest.param(*case, id=case[0]) for case in _tiny_models()]
)
def test_counts_equal_the_real_model_and_peft(name, hf_config, cls, tmp_path):
    from peft import LoraConfig, get_peft_model

    hf_config.save_pretrained(tmp_path)
    config = load_model_config(tmp_path / "config.json")
    model = cls(hf_config)
    assert count_parameters(config).total == sum(p.numel() for p in model.parameters()), name

    targets = ["q_proj", "v_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets))
    trainable, total = peft_model.get_nb_trainable_parameters()
    counted = count_parameters(config, "lora", lora_r=4, target_modules=targets)
    assert (counted.trainable, counted.total) == (trainable, total), name


def test_qlora_counts_only_the_decoder_linears_as_quantized(tiny_model_dir):
    config = load_model_config(tiny_model_dir / "config.json")
    counts = count_parameters(config, "qlora", lora_r=8)
    assert counts.quantized == config.num_hidden_layers * sum(
        i * o for i, o, _ in config.linear_shapes().values()
    )
    assert counts.trainable == counts.lora and 0 < counts.percent < 100


def test_reads_a_model_folder_by_reference(tiny_model_dir):
    assert load_model_config(str(tiny_model_dir)).hidden_size == 32


def test_errors_name_the_field_and_the_fix(tmp_path):
    config = load_model_config("llama-7b")
    with pytest.raises(ConfigError, match="gate_proj"):
        count_parameters(config, "lora", target_modules=["qproj"])
    with pytest.raises(ConfigError, match="method must be one of"):
        count_parameters(config, "dora")
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "gpt2", "vocab_size": 5}')
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported"):
        load_model_config(bad)
    with pytest.raises(ModelError, match="llama-7b"):
        load_model_config("llama-7x")
    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        ModelConfig("x", 10, 8, 8, 1, 4, 3, 2)


def test_lora_default_targets_every_block_linear_not_the_head():
    config = load_model_config("llama-7b")
    counts = count_parameters(config, "lora", lora_r=16)
    assert counts.trainable == count_parameters(config, "lora", 16, TARGETS).trainable
    assert counts.trainable == 32 * 16 * (4 * 8192 + 3 * (4096 + 11008))
