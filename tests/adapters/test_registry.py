"""AdapterRegistry: hot swap on one base, mixed-adapter batches, failed loads change nothing."""

from __future__ import annotations

import shutil
import threading

import pytest
import torch
from adapter_assets import load_base, logits, sample_ids

from tuneforge.adapters import AdapterRegistry, parse_adapter_spec
from tuneforge.errors import AdapterError
from tuneforge.generation import GenerationSettings, generate

GREEDY = GenerationSettings(max_new_tokens=10)
PROMPTS = [
    "Hello! How can I help you today?",
    "The capital of France is",
    "x",
    "Please return the order as JSON with the fields name, quantity and city.",
]


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def registry(base_dir, adapters):
    model, tokenizer = load_base(base_dir)
    registry = AdapterRegistry(model, tokenizer)
    registry.load("a", adapters["a"])
    registry.load("b", adapters["b"])
    registry.load("p", adapters["peft"])
    return registry


def _same(x, y) -> bool:
    return (x.text, x.completion_tokens, x.finish_reason) == (
        y.text,
        y.completion_tokens,
        y.finish_reason,
    )


def test_mixed_adapter_batch_gives_each_row_its_alone_tokens(registry):
    rows = [
        (_messages(PROMPTS[0]), "a"),
        (_messages(PROMPTS[1]), None),
        (_messages(PROMPTS[2]), "b"),
        (_messages(PROMPTS[3]), "a"),
        (_messages(PROMPTS[1]), "p"),
        (_messages(PROMPTS[1]), "b"),
    ]
    alone = [registry.generate(messages, adapter, GREEDY) for messages, adapter in rows]
    batch = registry.generate_batch(rows, GREEDY)
    assert all(_same(x, y) for x, y in zip(alone, batch, strict=True))
    # the adapters matter: one prompt, four different continuations
    same_prompt = [alone[1].text, alone[4].text, alone[5].text]
    assert len(set(same_prompt)) == 3


def test_base_rows_equal_plain_generation(registry, base_dir):
    model, tokenizer = load_base(base_dir)
    for text in PROMPTS[:2]:
        expected = generate(model, tokenizer, _messages(text), GREEDY)
        assert _same(registry.generate(_messages(text), None, GREEDY), expected)


def test_peft_names_for_callers_with_their_own_decoding(registry):
    assert registry.peft_name(None) == "__base__"
    assert registry.peft_name("a") in registry.model.peft_config
    with pytest.raises(AdapterError, match="no adapter named 'zzz'"):
        registry.peft_name("zzz")


def test_unloading_everything_gives_back_the_plain_base(registry, base_dir):
    model, tokenizer = load_base(base_dir)
    for name in ("a", "b", "p"):
        registry.unload(name)
    assert registry.names() == []
    assert [n for n, _ in registry.model.named_parameters()] == [
        n for n, _ in model.named_parameters()
    ]
    ids = sample_ids(tokenizer)
    assert torch.equal(logits(registry.model, ids), logits(model, ids))
    with pytest.raises(AdapterError, match="no adapter named 'a'"):
        registry.generate(_messages("x"), "a", GREEDY)


@pytest.mark.parametrize("case", ["other_base", "rank", "corrupt", "duplicate", "reserved"])
def test_failed_load_leaves_the_registry_unchanged(
    case, registry, adapters, other_base_dir, tmp_path
):
    from adapter_assets import make_lora

    folder = shutil.copytree(adapters["a"], tmp_path / "adapter")
    name = "new"
    if case == "other_base":
        folder = make_lora(other_base_dir, tmp_path / "other", seed=5)
    elif case == "rank":
        text = (folder / "adapter_config.json").read_text().replace('"r": 4', '"r": 6')
        (folder / "adapter_config.json").write_text(text)
    elif case == "corrupt":
        data = (folder / "adapter_model.safetensors").read_bytes()
        (folder / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    elif case == "duplicate":
        name = "a"
    elif case == "reserved":
        name = "__base__"
    tokenizer = registry.tokenizer
    ids = sample_ids(tokenizer)
    before_names = registry.names()
    before_params = [n for n, _ in registry.model.named_parameters()]
    before_logits = logits(registry.model, ids)
    before_reply = registry.generate(_messages(PROMPTS[0]), "a", GREEDY)
    with pytest.raises(AdapterError):
        registry.load(name, folder)
    assert registry.names() == before_names
    assert set(registry.model.peft_config) == {"adapter_0", "adapter_1", "adapter_2"}
    assert [n for n, _ in registry.model.named_parameters()] == before_params
    assert torch.equal(logits(registry.model, ids), before_logits)
    assert _same(registry.generate(_messages(PROMPTS[0]), "a", GREEDY), before_reply)


def test_unload_waits_for_generations_in_flight(registry):
    started, results, errors = threading.Event(), [], []

    def work():
        started.set()
        try:
            results.append(registry.generate(_messages(PROMPTS[3]), "a", GREEDY))
        except AdapterError as err:  # arrived after the unload began: refused, not broken
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    started.wait()
    registry.unload("a")
    for thread in threads:
        thread.join()
    assert len(results) + len(errors) == 3
    assert registry.in_use("a") == 0 and "a" not in registry.names()


def test_parse_adapter_spec(tmp_path):
    from pathlib import Path

    assert parse_adapter_spec("json=runs/json/adapter") == ("json", Path("runs/json/adapter"))
    assert parse_adapter_spec("runs/terse/adapter") == ("terse", Path("runs/terse/adapter"))
    assert parse_adapter_spec(str(tmp_path)) == (tmp_path.name, tmp_path)
    with pytest.raises(AdapterError, match="NAME=DIR"):
        parse_adapter_spec("=x")
