"""The UI's pieces without a browser: the form is the config dataclasses, its errors name the
field, the data report's numbers, and the compare command line built from its own parser."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from tuneforge.cli.ui_commands import compare_parser
from tuneforge.config_fields import config_fields
from tuneforge.data.config import DataConfig
from tuneforge.train.config import REPORT_TARGETS, TrainConfig, dump_config, load_config
from tuneforge.tuning_vocabulary import METHODS
from tuneforge.ui.compare_api import compare_argv, compare_options
from tuneforge.ui.data_api import length_histogram, marked_spans, split_problem
from tuneforge.ui.settings import checked_name
from tuneforge.ui.training_form import UI_SETS, FieldError, config_from_form, form_schema


def test_the_form_has_every_config_field_with_its_docstring_help():
    schema = form_schema()
    shown = [f["name"] for section in schema["sections"] for f in section["fields"]]
    top = [f.name for f in fields(TrainConfig) if f.name not in ("data", *UI_SETS)]
    data = [f"data.{f.name}" for f in fields(DataConfig) if f.name != "seed"]
    assert shown == top + data
    lr = next(f for f in schema["sections"][0]["fields"] if f["name"] == "lr")
    assert (lr["kind"], lr["default"], lr["help"]) == ("float", 2e-4, "peak learning rate.")
    method = next(f for f in schema["sections"][0]["fields"] if f["name"] == "method")
    assert tuple(method["choices"]) == METHODS
    report_to = next(f for f in schema["sections"][0]["fields"] if f["name"] == "report_to")
    assert (report_to["kind"], tuple(report_to["choices"])) == ("list", REPORT_TARGETS)
    assert "``" not in "".join(f["help"] for s in schema["sections"] for f in s["fields"])


def test_config_fields_reads_types_defaults_and_choices():
    by_name = {f.name: f for f in config_fields(TrainConfig)}
    assert "data" not in by_name
    assert (by_name["max_steps"].kind, by_name["max_steps"].optional) == ("int", True)
    assert (by_name["packing"].kind, by_name["packing"].default) == ("bool", False)
    assert by_name["target_modules"].kind == "list"


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"lr": "-1"}, "lr", "'lr' must be a number > 0; got -1"),
        ({"epochs": "two"}, "epochs", "'epochs' must be an integer >= 1; got 'two'"),
        ({"method": "dpo-ish"}, "method", "'method' must be one of full, lora"),
        ({"data.max_length": "1"}, "data.max_length", "max_length must be an integer >= 2"),
        ({"data.format": "xml"}, "data.format", "data.format must be one of"),
        ({"report_to": "wandb"}, "report_to", "must be a list of tensorboard, mlflow"),
        ({"out": "/etc"}, "out", "the form has no field 'out'"),
    ],
)
def test_a_refused_value_names_its_field(values, field, message):
    with pytest.raises(FieldError, match=message) as refused:
        config_from_form(values, Path("runs/x"))
    assert refused.value.field == field


def test_form_values_become_the_config_the_cli_reads_back(tmp_path):
    values = {
        "model": "default",
        "max_steps": "20",
        "lr": "1e-3",
        "packing": True,
        "target_modules": "q_proj, v_proj",
        "num_threads": "",
        "report_to": "tensorboard",
        "data.path": "train.jsonl",
        "data.max_length": "256",
        "data.template_file": "",
    }
    config = config_from_form(values, tmp_path / "r")
    assert (config.max_steps, config.lr, config.packing) == (20, 1e-3, True)
    assert config.target_modules == ["q_proj", "v_proj"] and config.num_threads is None
    assert (config.data.path, config.data.max_length, config.progress) == (
        "train.jsonl",
        256,
        False,
    )
    (tmp_path / "c.yaml").write_text(dump_config(config))
    assert load_config(tmp_path / "c.yaml") == config


def test_length_histogram_covers_every_length_once():
    bins = length_histogram([5, 5, 6, 44, 45, 46], bins=4)
    assert [(b["low"], b["high"], b["count"]) for b in bins] == [
        (5, 16, 3),
        (16, 27, 0),
        (27, 38, 0),
        (38, 49, 3),
    ]
    assert length_histogram([]) == []
    assert length_histogram([7]) == [{"low": 7, "high": 8, "count": 1}]


def test_marked_example_becomes_spans_and_problems_keep_their_line():
    assert marked_spans("user: hi\n⟦ok⟧\n⟦!⟧") == [
        {"text": "user: hi\n", "supervised": False},
        {"text": "ok", "supervised": True},
        {"text": "\n", "supervised": False},
        {"text": "!", "supervised": True},
    ]
    assert split_problem("d/a.jsonl:12: invalid JSON (x)") == {
        "file": "d/a.jsonl",
        "line": 12,
        "message": "invalid JSON (x)",
    }
    assert split_problem("record 4 has no text")["line"] is None


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 81, "a b"])
def test_run_names_are_plain_folder_names(name):
    with pytest.raises(Exception, match="use 1-80 letters"):
        checked_name(name)


def test_the_compare_form_is_the_compare_commands_parser():
    parser = compare_parser()
    options = {o["name"]: o for o in compare_options(parser)}
    assert "out" not in options and options["budget"]["choices"] == ["quick", "full"]
    assert options["report_only"]["kind"] == "bool" and options["threads"]["kind"] == "int"
    argv = compare_argv(
        parser, Path("runs/compare/c1"), {"budget": "full", "threads": "", "report_only": True}
    )
    assert argv == ["compare", "--out", "runs/compare/c1", "--budget", "full", "--report-only"]
    with pytest.raises(Exception, match="'huge' is not one of quick, full"):
        compare_argv(parser, Path("o"), {"budget": "huge"})
    with pytest.raises(Exception, match="compare has no option 'shell'"):
        compare_argv(parser, Path("o"), {"shell": "rm -rf /"})
    assert compare_options(None) == []
