"""`tuneforge generate --json-schema/--json` and `tuneforge eval --json-schema` through the CLI
main: the printed reply is the library's constrained reply, a cut one exits 1 with a note,
bad schemas are one-line errors, eval scores constrained replies."""

from __future__ import annotations

import json

import pytest
import torch
from jsonschema import Draft202012Validator

from json_schemas import ORDER
from tuneforge.cli import main


def valid(text: str) -> bool:
    try:
        return Draft202012Validator(ORDER).is_valid(json.loads(text))
    except json.JSONDecodeError:
        return False


@pytest.fixture
def schema_file(tmp_path):
    path = tmp_path / "order.schema.json"
    path.write_text(json.dumps(ORDER), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """A random LoRA adapter (non-zero B) for the tiny model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.adapters import save_adapter

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    torch.manual_seed(5)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            param.data.normal_(0, 0.5)
    return save_adapter(peft_model, tmp_path_factory.mktemp("lora") / "adapter")


def test_generate_json_schema_prints_the_constrained_reply(tiny_model_dir, schema_file, capsys):
    from tuneforge.generation import (
        GenerationSettings,
        JsonSchemaCompiler,
        chat_messages,
        generate,
    )
    from tuneforge.models import load_model

    args = ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "60", "--quiet"]
    assert main([*args, "--json-schema", str(schema_file), "Order 2 lamps"]) == 0
    printed = capsys.readouterr().out
    loaded = load_model(str(tiny_model_dir))
    grammar = JsonSchemaCompiler.for_model(loaded.model, loaded.tokenizer).compile(ORDER)
    reply = generate(
        loaded.model,
        loaded.tokenizer,
        chat_messages("Order 2 lamps"),
        GenerationSettings(max_new_tokens=60),
        logits_processor=grammar.row_processor(),
    )
    assert printed == reply.text + "\n"
    assert valid(reply.text)


def test_generate_json_cut_short_exits_1_with_a_note(tiny_model_dir, capsys):
    args = ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "3", "--quiet"]
    assert main([*args, "--json", "List three colours"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("{")
    assert "the JSON was cut at --max-new-tokens 3 before it closed" in captured.err


def test_generate_json_schema_side_by_side_adapters(tiny_model_dir, lora_dir, schema_file, capsys):
    args = ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "60", "--quiet"]
    code = main([*args, "--adapter", f"t={lora_dir}", "--json-schema", str(schema_file), "Hi"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "── base ──" and lines[2].startswith("── t (")
    assert valid(lines[1]) and valid(lines[3])


def test_generate_json_options_exclude_each_other(tiny_model_dir, schema_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--json", "--json-schema", str(schema_file), "Hi"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{\n  \"type\": ,\n}", "order.schema.json:2: not JSON"),
        (json.dumps({"type": "array", "uniqueItems": True}), 'Unimplemented keys: ["uniqueItems"]'),
    ],
)  # fmt: skip
def test_generate_bad_schema_is_a_one_line_error(
    tiny_model_dir, tmp_path, capsys, content, message
):
    path = tmp_path / "order.schema.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    code = main(["generate", "--model", str(tiny_model_dir), "--json-schema", str(path), "Hi"])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0]


def test_eval_json_schema_scores_constrained_replies(tiny_model_dir, schema_file, tmp_path, capsys):
    data = tmp_path / "orders.jsonl"
    items = [
        {"prompt": "Order 2 lamps", "expected": {"intent": "order", "quantity": 2, "urgent": False}},
        {"prompt": "Cancel 3 mugs now", "expected": {"intent": "cancel", "quantity": 3, "urgent": True}},
    ]  # fmt: skip
    data.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    base = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--metric", "json"]
    results = {}
    for name, extra in (
        ("free", ["--schema", str(schema_file)]),
        ("constrained", ["--json-schema", str(schema_file)]),
    ):
        out = tmp_path / f"{name}.json"
        assert main([*base, "--max-new-tokens", "60", *extra, "--out", str(out)]) == 0
        results[name] = json.loads(out.read_text())
    capsys.readouterr()
    constrained = results["constrained"]
    assert constrained["metrics"]["schema_valid"] == 1.0
    assert constrained["metrics"]["valid_json"] == 1.0
    assert all(valid(row["reply"]) for row in constrained["rows"])
    assert results["free"]["metrics"]["schema_valid"] == 0.0


def test_eval_json_schema_with_store_is_refused(tiny_model_dir, schema_file, tmp_path, capsys):
    data = tmp_path / "orders.jsonl"
    data.write_text(json.dumps({"prompt": "x", "expected": {}}) + "\n", encoding="utf-8")
    code = main(
        ["eval", "--data", str(data), "--json-schema", str(schema_file), "--store", str(tmp_path)]
    )
    assert code == 2
    assert "--json-schema with --store" in capsys.readouterr().err
