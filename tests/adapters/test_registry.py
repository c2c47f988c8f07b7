"""AdapterRegistry: hot swap on one base, mixed-adapter batches, failed loads change nothing,
and the one drain-before-unload mechanism (reserve / release / unload)."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import torch
from adapter_assets import load_base, logits, sample_ids

from tuneforge.adapters import AdapterRegistry
from tuneforge.errors import AdapterError
from tuneforge.generation import GenerationSettings, Row, generate, prompt_ids

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


def _row(registry, text: str, adapter: str | None, limit: int = 10, stop=None) -> Row:
    settings = GenerationSettings(max_new_tokens=limit, stop=stop or [])
    return Row(prompt_ids(registry.tokenizer, _messages(text)), settings, adapter)


def test_decode_rows_with_their_own_adapters_limits_and_stops_equal_each_alone(registry):
    """Rows of one batch on different adapters, lengths, limits and stops: each row's reply is
    the one it gets decoded alone."""
    specs = [
        (PROMPTS[0], None, 12),
        (PROMPTS[1], "a", 5),
        (PROMPTS[2], "b", 20),
        (PROMPTS[3], "p", 9),
    ]
    full = [registry.decode([_row(registry, *spec)])[0] for spec in specs]
    stop = full[2].text[3:5]
    assert stop.strip(), "the reference reply is too short to pick a stop string"
    rows = [_row(registry, *spec) for spec in specs]
    rows[2].settings.stop = [stop]
    pieces: list[str] = []
    rows[2].on_text = pieces.append
    together = registry.decode(rows)
    for index in (0, 1, 3):
        assert _same(together[index], full[index])
    assert [together[i].completion_tokens for i in (1, 3)] == [5, 9]
    assert together[2].text == full[2].text[: full[2].text.find(stop)]
    assert together[2].finish_reason == "stop"
    assert "".join(pieces) == together[2].text


def test_reserve_refuses_unknown_adapters_all_or_nothing(registry):
    with pytest.raises(AdapterError, match="no adapter named 'zzz'"):
        registry.reserve(["a", None, "zzz"])
    assert registry.in_use("a") == 0
    registry.reserve(["a", None, "a"])
    assert registry.in_use("a") == 2
    registry.release(["a", None, "a"])
    assert registry.in_use("a") == 0


def test_unload_waits_for_a_reserved_request_and_refuses_new_ones(registry):
    expected = registry.generate(_messages(PROMPTS[0]), "a", GREEDY)
    registry.reserve(["a"])  # a request accepted (queued) on adapter "a"
    unloading = threading.Thread(target=registry.unload, args=("a",))
    unloading.start()
    deadline = time.monotonic() + 10
    while "a" in registry.names() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "a" not in registry.names()  # no longer offered ...
    with pytest.raises(AdapterError, match="'a' is being unloaded"):
        registry.reserve(["a"])  # ... nor accepted
    with pytest.raises(AdapterError, match="'a' is being unloaded"):
        registry.unload("a")
    time.sleep(0.1)
    assert unloading.is_alive()  # still waiting for the reserved request, which still runs:
    reply = registry.decode([_row(registry, PROMPTS[0], "a")])[0]
    assert _same(reply, expected)
    registry.release(["a"])
    unloading.join(10)
    assert not unloading.is_alive()
    assert registry.in_use("a") == 0 and set(registry.folders()) == {"b", "p"}
    with pytest.raises(AdapterError, match="no adapter named 'a'"):
        registry.reserve(["a"])


def test_unload_that_times_out_leaves_the_adapter_usable(registry):
    registry.reserve(["b"])
    with pytest.raises(AdapterError, match="still has 1 requests in flight after 0.05 s"):
        registry.unload("b", timeout_s=0.05)
    assert "b" in registry.names()
    registry.reserve(["b"])
    registry.release(["b", "b"])
    registry.unload("b", timeout_s=1)
    assert registry.names() == ["a", "p"]
