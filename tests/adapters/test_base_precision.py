"""An adapter runs on the base it was trained on: a QLoRA adapter on the NF4 4-bit base.

``generate``, ``eval``, ``rag ask`` and ``serve`` load their base with
``tuneforge.adapters.load_base_for_adapters``; its replies are the replies of the QLoRA model as
training built it, and the command says which base it runs on. Adapters trained on different
bases cannot share one server's base.
"""

from __future__ import annotations

import json

import pytest
import torch
from adapter_assets import make_lora
from safetensors.torch import load_file

from tuneforge.cli import main
from tuneforge.errors import AdapterError
from tuneforge.generation import GenerationSettings, chat_messages, generate

PROMPT = "Order 2 lamps to Oslo"
TOKENS = 12
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def qlora_run(tiny64_dir, tmp_path_factory):
    """A QLoRA run of 3 steps on the tiny width-64 base (its adapter/ and config.yaml)."""
    root = tmp_path_factory.mktemp("qlora")
    data = root / "train.jsonl"
    records = [
        {"messages": [{"role": "user", "content": f"Order {n} lamps to Oslo"},
                      {"role": "assistant", "content": json.dumps({"item": "lamp", "qty": n})}]}
        for n in range(1, 17)
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = root / "run"
    args = [
        "train", "--model", str(tiny64_dir), "--data", str(data), "--out", str(out),
        "--method", "qlora", "--max-steps", "3", "--batch-size", "4", "--max-length", "64",
        "--lr", "1e-2", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def lora_adapter(tiny64_dir, tmp_path_factory):
    """An adapter trained on the full-precision base."""
    return make_lora(tiny64_dir, tmp_path_factory.mktemp("lora") / "adapter", r=4)


def _as_trained(run):
    """The QLoRA model exactly as training built it, with the trained adapter weights in it."""
    from peft.utils import set_peft_model_state_dict

    from tuneforge.train import load_config, prepare_model

    prepared = prepare_model(load_config(run / "config.yaml", {"progress": False}), CPU)
    tensors = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(prepared.model, tensors)
    return prepared.model.eval(), prepared.tokenizer


def _reply(model, tokenizer) -> str:
    settings = GenerationSettings(max_new_tokens=TOKENS)
    return generate(model, tokenizer, chat_messages(PROMPT), settings).text


def test_generate_runs_a_qlora_adapter_on_its_4bit_base(qlora_run, tiny64_dir, capsys):
    from tuneforge.adapters import attach_adapter
    from tuneforge.models import load_model

    expected = _reply(*_as_trained(qlora_run))
    args = ["generate", "--model", str(tiny64_dir), "--adapter", str(qlora_run / "adapter")]
    assert main([*args, "--max-new-tokens", str(TOKENS), PROMPT]) == 0
    printed = capsys.readouterr()
    assert printed.out == expected + "\n"
    assert "on the NF4 4-bit base it was trained on (QLoRA; double quantization" in printed.err

    # The test tells the bases apart: on the full-precision base the adapter answers otherwise.
    loaded = load_model(str(tiny64_dir))
    on_full = attach_adapter(loaded.model, qlora_run / "adapter")
    assert _reply(on_full, loaded.tokenizer) != expected


def test_eval_scores_a_qlora_adapter_on_its_4bit_base(qlora_run, tiny64_dir, tmp_path):
    from tuneforge.evaluate.runner import evaluate

    data = tmp_path / "held_out.jsonl"
    data.write_text('{"text": "Order 3 lamps to Oslo, please."}\n', encoding="utf-8")
    result = tmp_path / "eval.json"
    args = ["eval", "--model", str(tiny64_dir), "--adapter", str(qlora_run / "adapter")]
    assert main([*args, "--data", str(data), "--metric", "perplexity", "--out", str(result)]) == 0
    model, tokenizer = _as_trained(qlora_run)
    expected = evaluate(
        model, tokenizer, [{"text": "Order 3 lamps to Oslo, please."}], ["perplexity"]
    )
    got = json.loads(result.read_text())["metrics"]["perplexity"]
    assert got == pytest.approx(expected.metrics["perplexity"], rel=1e-5)


def test_adapters_of_different_bases_cannot_share_one(qlora_run, lora_adapter, tiny64_dir):
    from tuneforge.adapters import load_base_for_adapters

    with pytest.raises(AdapterError) as caught:
        load_base_for_adapters(str(tiny64_dir), [qlora_run / "adapter", lora_adapter])
    message = str(caught.value)
    assert str(qlora_run / "adapter") in message and str(lora_adapter) in message
    assert "NF4 4-bit" in message and "full-precision" in message


def test_serve_loads_the_base_its_adapters_were_trained_on_and_says_so(
    qlora_run, lora_adapter, tiny64_dir, monkeypatch, capsys
):
    import bitsandbytes as bnb

    started = {}

    def run_app(app, **_options):
        started["app"] = app

    monkeypatch.setattr("uvicorn.run", run_app)
    args = ["serve", "--model", str(tiny64_dir), "--adapter", f"q={qlora_run / 'adapter'}"]
    assert main(args) == 0
    assert "base: NF4 4-bit" in capsys.readouterr().out
    engine = started["app"].state.engine
    base = engine.registry.model.get_base_model()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())

    assert main([*args, "--adapter", f"l={lora_adapter}"]) == 2
    assert "cannot share one base" in capsys.readouterr().err
