"""The training config: YAML + overrides, errors that name the field, shipped examples valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.errors import ConfigError
from tuneforge.train.config import dump_config, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: a.jsonl\nmethod: qlora\nlora_r: 4\nlr: 0.001\n")
    config = load_config(path, {"lora_r": 16, "lr": None, "target_modules": "q_proj,v_proj"})
    assert (config.method, config.lora_r, config.lr) == ("qlora", 16, 0.001)
    assert config.target_modules == ["q_proj", "v_proj"]
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "data: a.jsonl\nlora_rank: 4\n",
            "unknown train config field 'lora_rank'; did you mean 'lora_r'",
        ),
        ("data: a.jsonl\nmethod: prefix\n", "field 'method' must be one of full, lora, qlora"),
        ("data: a.jsonl\nlr: -1\n", "field 'lr' must be a number > 0"),
        ("data: a.jsonl\nbatch_size: 0\n", "field 'batch_size' must be an integer >= 1"),
        ("method: lora\n", "field 'data' is empty"),
        ("data: a.jsonl\nlora_dropout: 1.5\n", "field 'lora_dropout' must be in [0, 1)"),
        ("data: [a\n", "invalid YAML"),
    ],
)
def test_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value) or "field" in str(caught.value)


@pytest.mark.parametrize("name", ["full.yaml", "lora.yaml", "qlora.yaml", "demo.yaml"])
def test_shipped_examples_validate(name):
    config = load_config(EXAMPLES / name)
    assert config.method in ("full", "lora", "qlora")
    assert (EXAMPLES.parent / config.data).exists()
