"""The training config: YAML + overrides, nested or flat data options, errors that name the
field and the file, every shipped example valid, --help generated from the dataclasses."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from tuneforge.cli import main
from tuneforge.data import DataConfig
from tuneforge.errors import ConfigError
from tuneforge.train.config import TrainConfig, config_from_dict, dump_config, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: a.jsonl\nmethod: qlora\nlora_r: 4\nlr: 0.001\nmax_length: 64\n")
    overrides = {"lora_r": 16, "lr": None, "target_modules": "q_proj,v_proj", "format": "text"}
    config = load_config(path, overrides)
    assert (config.method, config.lora_r, config.lr) == ("qlora", 16, 0.001)
    assert config.target_modules == ["q_proj", "v_proj"]
    # an override replaces one data option and keeps the file's others
    assert (config.data.path, config.data.max_length, config.data.format) == ("a.jsonl", 64, "text")
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_flat_and_nested_data_options_give_equal_configs(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text(
        "data: a.jsonl\nmax_length: 128\ntrain_on_inputs: true\nval_fraction: 0.1\n"
        "truncation: drop\nskip_invalid: true\nseed: 5\nlr: 0.001\n"
    )
    nested = tmp_path / "nested.yaml"
    nested.write_text(
        "data:\n  path: a.jsonl\n  max_length: 128\n  train_on_inputs: true\n"
        "  val_fraction: 0.1\n  truncation: drop\n  skip_invalid: true\nseed: 5\nlr: 0.001\n"
    )
    config = load_config(flat)
    assert config == load_config(nested)
    assert config.data == DataConfig(
        path="a.jsonl",
        max_length=128,
        train_on_inputs=True,
        val_fraction=0.1,
        truncation="drop",
        skip_invalid=True,
        seed=5,  # the run's seed splits the data
    )
    # what other packages pass (compare, demo): flat keys in one mapping
    same = load_config(None, {"data": "a.jsonl", "max_length": 128, "seed": 5, "lr": 0.001,
                              "train_on_inputs": True, "val_fraction": 0.1,
                              "truncation": "drop", "skip_invalid": True})  # fmt: skip
    assert same == config
    given = config_from_dict({"data": config.data, "seed": 5, "lr": 0.001})  # a DataConfig too
    assert given == config


def test_config_yaml_is_written_nested_without_a_second_seed():
    config = config_from_dict({"data": "a.jsonl", "max_length": 64, "seed": 3})
    written = yaml.safe_load(dump_config(config))
    assert written["data"]["path"] == "a.jsonl" and written["data"]["max_length"] == 64
    assert "seed" not in written["data"] and written["seed"] == 3
    assert "max_length" not in written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "data: a.jsonl\nlora_rank: 4\n",
            "unknown train config field 'lora_rank'; did you mean 'lora_r'",
        ),
        (
            "data: {path: a.jsonl, max_lenght: 4}\n",
            "unknown data config field 'max_lenght'; did you mean 'max_length'",
        ),
        ("data: a.jsonl\nmethod: prefix\n", "field 'method' must be one of full, lora, qlora"),
        ("data: a.jsonl\nlr: -1\n", "field 'lr' must be a number > 0"),
        ("data: a.jsonl\nbatch_size: 0\n", "field 'batch_size' must be an integer >= 1"),
        ("data: a.jsonl\nlora_dropout: 1.5\n", "field 'lora_dropout' must be in [0, 1)"),
        ("data: a.jsonl\noptimizer: adamw8bit\n", "'optimizer' must be one of adamw, adamw_8bit"),
        ("data: a.jsonl\nmax_length: 1\n", "data.max_length must be an integer >= 2 tokens"),
        (
            "data: {path: a.jsonl, max_length: 64}\nmax_length: 32\n",
            "'max_length' is given twice, at the top level and under 'data'",
        ),
        ("data: {path: a.jsonl, seed: 1}\n", "data.seed is not a training config key"),
        ("data: [a.jsonl]\n", "field 'data' must be a data file path, a mapping"),
        ("data: [a\n", "invalid YAML"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")


def test_one_max_length_rule_for_train_and_data():
    """The lower bound of max_length lives in DataConfig alone; train and data agree on it."""
    assert config_from_dict({"max_length": 2}).data.max_length == 2
    with pytest.raises(ConfigError, match="data.max_length must be an integer >= 2"):
        config_from_dict({"max_length": 1})
    with pytest.raises(ConfigError, match="data.max_length must be an integer >= 2"):
        DataConfig(max_length=1)


def test_a_run_without_data_is_refused_before_the_run_dir_is_touched(tmp_path):
    from tuneforge.train import train

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    config = load_config(None, {"out": str(out), "force": True})  # valid: plan needs no data
    with pytest.raises(ConfigError, match="no data given .*--data FILE"):
        train(config)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_example_validates_and_its_data_exists(path):
    assert len(EXAMPLES) >= 4
    config = load_config(path)
    assert config.method in ("full", "lora", "qlora")
    assert (REPO / config.data.path).is_file()
    assert config_from_dict(yaml.safe_load(dump_config(config))) == config


def test_train_help_lists_every_config_field_with_its_help(capsys):
    from tuneforge.config_fields import field_docs

    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    train_docs, data_docs = field_docs(TrainConfig), field_docs(DataConfig)
    for item in fields(TrainConfig):
        if item.name in ("data", "raft"):
            continue  # nested: their fields follow (data's path is --data, raft's --raft-*)
        assert f"--{item.name.replace('_', '-')} " in text, item.name
        assert " ".join(train_docs[item.name].replace("``", "").split()[:4]) in text, item.name
    for item in fields(DataConfig):
        if item.name == "seed":
            assert "The validation split uses --seed" in text
            continue
        flag = "--data" if item.name == "path" else f"--{item.name.replace('_', '-')}"
        assert f"{flag} " in text, item.name
        assert " ".join(data_docs[item.name].replace("``", "").split()[:4]) in text, item.name
    assert "(default: lora)" in text and "{adamw,adamw_8bit,paged_adamw_8bit}" in text
    assert "--raft-oracle-share " in text and "RAFT's P" in text


def test_every_config_field_is_documented_once():
    from tuneforge.config_fields import field_docs

    for cls in (TrainConfig, DataConfig):
        docs = field_docs(cls)
        assert sorted(docs) == sorted(f.name for f in fields(cls)), cls.__name__
        assert all(len(text) > 10 for text in docs.values())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lr: 1e-3\n", {"lr": 1e-3}),  # YAML 1.1 reads this as the string '1e-3'
        ("lr: 2.5E-4\nweight_decay: 1e-2\n", {"lr": 2.5e-4, "weight_decay": 1e-2}),
        ("lr: '3e-4'\nwarmup_ratio: '0.1'\n", {"lr": 3e-4, "warmup_ratio": 0.1}),
        ("max_steps: 1e3\nbatch_size: '16'\n", {"max_steps": 1000, "batch_size": 16}),
        ("lora_alpha: 32\n", {"lora_alpha": 32}),
        ("epochs: 2.0\nmax_steps: '1.5e1'\n", {"epochs": 2, "max_steps": 15}),  # whole numbers
    ],
)
def test_numbers_written_as_strings_in_yaml_are_numbers(tmp_path, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text("data: a.jsonl\n" + text)
    config = load_config(path)
    for name, value in expected.items():
        got = getattr(config, name)
        assert got == value and type(got) is type(value), (name, got)


def test_numeric_strings_reach_the_data_options_too(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: {path: a.jsonl, val_fraction: 5e-2, max_length: '256'}\n")
    config = load_config(path)
    assert (config.data.val_fraction, config.data.max_length) == (0.05, 256)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: fast\n", "field 'lr' must be a number > 0; got 'fast'"),
        ("max_steps: '2.5'\n", "field 'max_steps' must be an integer >= 1 or null; got '2.5'"),
        ("batch_size: 8.5\n", "field 'batch_size' must be an integer >= 1; got 8.5"),
        ("lr: 1,5\n", "field 'lr' must be a number > 0; got '1,5'"),
        ("lr: nan\n", "field 'lr' must be a number > 0; got 'nan'"),
    ],
)
def test_strings_that_are_not_plainly_numbers_are_still_refused(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text("data: a.jsonl\n" + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("key", "ours"),
    [
        ("learning_rate", "lr"),
        ("per_device_train_batch_size", "batch_size"),
        ("gradient_accumulation_steps", "grad_accum"),
        ("num_train_epochs", "epochs"),
        ("lora_rank", "lora_r"),
        ("model_name_or_path", "model"),
        ("output_dir", "out"),
        ("max_seq_length", "max_length"),
    ],
)
def test_names_from_trl_and_transformers_point_to_ours(tmp_path, key, ours):
    path = tmp_path / "trl.yaml"
    path.write_text(f"data: a.jsonl\n{key}: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"unknown train config field '{key}'" in str(caught.value)
    assert f"did you mean '{ours}'? ('{key}' is another tool's name" in str(caught.value)
