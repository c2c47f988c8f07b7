"""What batched LoRA keeps between forwards (``StackedLora``, the masks of ``set_rows``) and its
packed bf16 products: reused while valid, rebuilt when the adapters change, and each row's
term still the peft term of its own adapter (tiny random models)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_batched_lora import lively_llama

from tiny import build_tokenizer
from tuneforge.generation.batched_lora import (
    STACKED_LORA,
    LoraBank,
    StackedLora,
    lora_layers,
)
from tuneforge.generation.packed_linear import packing_supported


def peft_term(layer, name: str, x: torch.Tensor) -> torch.Tensor:
    """peft's own LoRA term of adapter ``name`` in ``layer`` for ``x``, in fp32."""
    x = x.float()
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    return (x @ a.t() @ b.t()) * layer.scaling[name]


def expected_delta(layer, row_adapters, x: torch.Tensor) -> torch.Tensor:
    rows = []
    for row, adapters in enumerate(row_adapters):
        term = torch.zeros(*x.shape[1:-1], layer.out_features)
        for name in adapters:
            term = term + peft_term(layer, name, x[row])
        rows.append(term)
    return torch.stack(rows)


@pytest.fixture()
def model():
    """A fresh peft model per test (tests change adapter weights in place): adapters ``a``
    (r=4) and ``b`` (r=8) on every linear layer, B != 0."""
    torch.manual_seed(7)
    config = dict(init_lora_weights=False, lora_alpha=8, target_modules="all-linear")
    peft_model = get_peft_model(lively_llama(build_tokenizer()), LoraConfig(r=4, **config), "a")
    peft_model.add_adapter("b", LoraConfig(r=8, **config))
    return peft_model.eval()


def first_layer(model):
    return lora_layers(model)[0][1]


def test_a_new_bank_reuses_the_stacked_weights_and_a_changed_adapter_is_restacked(model):
    layer = first_layer(model)
    group = (layer,)
    x = torch.randn(2, 1, layer.in_features, generator=torch.Generator().manual_seed(0))
    rows = [("a",), ("b",)]
    first = LoraBank(model, ("a", "b"))
    first.set_rows(rows)
    before = first.delta(group, x)
    stacked = STACKED_LORA.stacked(group, ("a", "b"), torch.float32)
    second = LoraBank(model, ("a", "b"))  # a new batch: nothing stacked again
    second.set_rows(rows)
    torch.testing.assert_close(second.delta(group, x), before)
    assert STACKED_LORA.stacked(group, ("a", "b"), torch.float32) is stacked
    with torch.no_grad():
        layer.lora_B["b"].weight.mul_(3)  # trained or edited in place: a new version
    third = LoraBank(model, ("a", "b"))
    third.set_rows(rows)
    got = third.delta(group, x)
    torch.testing.assert_close(got, expected_delta(layer, rows, x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got[1], before[1])
    layer.scaling["a"] = layer.scaling["a"] * 2  # what peft's set_scale does
    fourth = LoraBank(model, ("a", "b"))
    fourth.set_rows(rows)
    torch.testing.assert_close(
        fourth.delta(group, x), expected_delta(layer, rows, x), rtol=1e-5, atol=1e-6
    )


def test_each_group_keeps_its_last_sets_of_adapters():
    tokenizer = build_tokenizer()
    config = dict(init_lora_weights=False, target_modules=["q_proj"])
    model = get_peft_model(lively_llama(tokenizer), LoraConfig(r=2, **config), "a")
    for name in ("b", "c"):
        model.add_adapter(name, LoraConfig(r=2, **config))
    group = (first_layer(model),)
    held = StackedLora(sets_per_group=2)
    ab = held.stacked(group, ("a", "b"), torch.float32)
    held.stacked(group, ("a", "c"), torch.float32)
    assert held.stacked(group, ("a", "b"), torch.float32) is ab  # still held, now the newest
    held.stacked(group, ("b", "c"), torch.float32)  # drops ("a", "c"), the oldest
    assert held.stacked(group, ("a", "b"), torch.float32) is ab
    assert held.stacked(group, ("a", "c"), torch.float32).layout.width == 4  # made again


def test_rows_joining_and_leaving_get_their_own_terms_from_one_bank(model):
    bank = LoraBank(model, ("a", "b"))
    generator = torch.Generator().manual_seed(1)
    for rows in ([("a",), ("b",), ()], [("b",), ()], [(), ("a",), ("a",), ("b",)]):
        bank.set_rows(rows)  # a new composition: M made again, the stacked weights kept
        for _, layer in lora_layers(model):
            x = torch.randn(len(rows), 3, layer.in_features, generator=generator)
            torch.testing.assert_close(
                bank.delta((layer,), x), expected_delta(layer, rows, x), rtol=1e-5, atol=1e-6
            )


def test_an_input_without_a_token_axis_gets_each_rows_term(model):
    """The logits head reads ``[rows, hidden]``: each row its own adapter's term."""
    layer = first_layer(model)
    rows = [("b",), (), ("a",)]
    bank = LoraBank(model, ("a", "b"))
    bank.set_rows(rows)
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(2))
    expected = expected_delta(layer, rows, x[:, None])[:, 0]
    torch.testing.assert_close(bank.delta((layer,), x), expected, rtol=1e-5, atol=1e-6)
    out = torch.zeros(3, layer.out_features)
    bank.add_delta((layer,), x, out)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(
    not packing_supported(torch.zeros(1, dtype=torch.bfloat16)),
    reason="this CPU has no native bf16 products (the packed products are not used)",
)
@pytest.mark.parametrize("tokens", [1, 40])
def test_bf16_terms_by_packed_products_and_by_matmul_match_peft(model, tokens):
    """In bf16 on CPU a decode step's terms (one token per row) run as packed oneDNN
    products, a prefill's as plain matmuls: both give peft's fp32 term of each row's adapter
    within bf16 rounding, in place and not."""
    rows = [("a",), ("b",), (), ("a", "b")]
    bank = LoraBank(model, ("a", "b"))
    bank.set_rows(rows)
    attention = model.get_base_model().model.layers[1].self_attn
    group = (attention.q_proj, attention.k_proj, attention.v_proj)
    x = torch.randn(4, tokens, 32, generator=torch.Generator().manual_seed(3))
    expected = torch.cat([expected_delta(layer, rows, x) for layer in group], dim=-1)
    got = bank.delta(group, x.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)
    out = torch.zeros(4, tokens, 64, dtype=torch.bfloat16)
    bank.add_delta(group, x.bfloat16(), out)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    stacked = STACKED_LORA.stacked(group, ("a", "b"), torch.bfloat16)
    assert stacked.a_packed is not None  # the packed weights exist for the decode steps
