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


def _qlora_run(tiny64_dir, root, dtype: str):
    """A QLoRA run of 3 steps in `dtype` on the tiny width-64 base, in root/run."""
    root.mkdir(parents=True, exist_ok=True)
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
        "--lr", "1e-2", "--dtype", dtype, "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def qlora_run(tiny64_dir, tmp_path_factory):
    """A QLoRA run of 3 steps on the tiny width-64 base (its adapter/ and config.yaml), in fp32:
    the tests compare with the model as training built it, which a bf16 run uses only under
    autocast (its LoRA layers take bf16 inputs as they are)."""
    return _qlora_run(tiny64_dir, tmp_path_factory.mktemp("qlora"), "float32")


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
    from peft import PeftModel

    from tuneforge.models import load_model

    expected = _reply(*_as_trained(qlora_run))
    args = ["generate", "--model", str(tiny64_dir), "--adapter", str(qlora_run / "adapter")]
    assert main([*args, "--max-new-tokens", str(TOKENS), PROMPT]) == 0
    printed = capsys.readouterr()
    assert printed.out == expected + "\n"
    assert "on the NF4 4-bit base it was trained on (QLoRA; double quantization" in printed.err

    # The test tells the bases apart: on the full-precision base (plain peft; tuneforge refuses
    # it, see below) the adapter answers otherwise.
    loaded = load_model(str(tiny64_dir))
    on_full = PeftModel.from_pretrained(loaded.model, str(qlora_run / "adapter")).eval()
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


def test_a_bf16_qlora_adapter_evaluates_on_its_4bit_base(tiny64_dir, tmp_path):
    """What ``dtype: auto`` trains on a CPU with AVX512-BF16 (and on a GPU) loads for eval."""
    run = _qlora_run(tiny64_dir, tmp_path / "bf16", "bfloat16")
    data = tmp_path / "held_out.jsonl"
    data.write_text('{"text": "Order 3 lamps to Oslo, please."}\n', encoding="utf-8")
    result = tmp_path / "eval.json"
    args = ["eval", "--model", str(tiny64_dir), "--adapter", str(run / "adapter")]
    assert main([*args, "--data", str(data), "--metric", "perplexity", "--out", str(result)]) == 0
    perplexity = json.loads(result.read_text())["metrics"]["perplexity"]
    assert 1 < perplexity < float("inf")


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


def test_an_adapter_is_refused_on_a_base_of_another_precision(qlora_run, lora_adapter, tiny64_dir):
    """Loaded later (the registry, /v1/load_lora_adapter), an adapter meets a base already
    chosen: a QLoRA adapter on the full-precision base, or a LoRA one on the 4-bit base, is
    refused up front, before peft sees it, naming both bases."""
    from tuneforge.adapters import AdapterRegistry, load_base_for_adapters
    from tuneforge.models import load_model

    full = load_model(str(tiny64_dir))
    registry = AdapterRegistry(full.model, full.tokenizer)
    with pytest.raises(AdapterError) as caught:
        registry.load("q", qlora_run / "adapter")
    message = str(caught.value)
    assert "trained on the NF4 4-bit base (QLoRA)" in message
    assert "this base is the full-precision base" in message
    assert registry.folders() == {}

    four_bit = load_base_for_adapters(str(tiny64_dir), [qlora_run / "adapter"])
    registry = AdapterRegistry(four_bit.model, four_bit.tokenizer)
    registry.load("q", qlora_run / "adapter")
    with pytest.raises(AdapterError, match="trained on the full-precision base, this base is the"):
        registry.load("l", lora_adapter)
    assert list(registry.folders()) == ["q"]


def test_serve_answers_400_to_loading_an_adapter_of_another_base(
    qlora_run, tiny64_dir, monkeypatch, capsys
):
    from fastapi.testclient import TestClient

    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **_options: started.setdefault("app", app))
    root = qlora_run.parent
    assert main(["serve", "--model", str(tiny64_dir), "--adapter-root", str(root)]) == 0
    with TestClient(started["app"], base_url="http://127.0.0.1") as client:
        answer = client.post(
            "/v1/load_lora_adapter",
            json={"lora_name": "q", "lora_path": str(qlora_run / "adapter")},
        )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_adapter" and error["param"] == "lora_path"
    assert "NF4 4-bit base" in error["message"] and "full-precision" in error["message"]
