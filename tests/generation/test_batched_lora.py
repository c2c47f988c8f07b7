"""Batched LoRA (``LoraBank``): each row's term equals peft's for that row's adapter, a mixed
batch decodes as each adapter alone and as peft's mixed-batch path, and adapters it does not
cover (DoRA) send their rows to the plain path (fp32, tiny random models)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tiny import build_llama, build_tokenizer
from tuneforge.generation import (
    GenerationSettings,
    Row,
    chat_messages,
    fast_path_blocker,
    generate_rows,
    prompt_ids,
)
from tuneforge.generation.batched_lora import LoraBank, lora_layers
from tuneforge.generation.decoding import generate_rows_plain

PROMPTS = ["The capital of France is", "Hello!", "Please return the order as JSON", "Hi"]


def lively_llama(tokenizer, seed: int = 3):
    model = build_llama(tokenizer, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model


def with_adapters(tokenizer, **extra_adapters):
    """A peft model with adapters ``a`` (r=4, all linear) and ``b`` (r=8, q/v only), B != 0."""
    torch.manual_seed(5)
    config = dict(init_lora_weights=False, lora_alpha=8)
    model = get_peft_model(
        lively_llama(tokenizer), LoraConfig(r=4, target_modules="all-linear", **config), "a"
    )
    model.add_adapter("b", LoraConfig(r=8, target_modules=["q_proj", "v_proj"], **config))
    for name, lora in extra_adapters.items():
        model.add_adapter(name, lora)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def peft_model(tokenizer):
    return with_adapters(tokenizer)


def rows_for(tokenizer, limit: int = 12) -> list[Row]:
    settings = GenerationSettings(max_new_tokens=limit)
    return [Row(prompt_ids(tokenizer, chat_messages(p)), settings) for p in PROMPTS]


def texts(replies):
    return [(r.text, r.completion_tokens) for r in replies]


def test_each_rows_term_is_peft_lora_term_of_its_adapter(peft_model):
    bank = LoraBank(peft_model, ("a", "b"))
    row_adapters = [("a",), (), ("b",), ("a",)]
    bank.set_rows(row_adapters)
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for _, layer in lora_layers(peft_model):
        x = torch.randn(4, 3, layer.in_features, generator=generator)
        delta = bank.delta((layer,), x)
        for row, adapters in enumerate(row_adapters):
            expected = torch.zeros(3, layer.out_features)
            for name in adapters:
                if name in layer.lora_A:
                    term = layer.lora_B[name](layer.lora_A[name](x[row])) * layer.scaling[name]
                    expected = expected + term
            got = torch.zeros_like(expected) if delta is None else delta[row]
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
            checked += bool(adapters)
    assert checked > 0


def test_a_groups_term_is_its_layers_terms_side_by_side(peft_model):
    bank = LoraBank(peft_model, ("a", "b"))
    bank.set_rows([("b",), ("a",), ()])
    attention = peft_model.get_base_model().model.layers[0].self_attn
    group = (attention.q_proj, attention.k_proj, attention.v_proj)  # b adapts q and v only
    x = torch.randn(3, 2, 32, generator=torch.Generator().manual_seed(1))
    parts = [bank.delta((layer,), x) for layer in group]
    parts = [
        torch.zeros(3, 2, layer.out_features) if p is None else p
        for p, layer in zip(parts, group, strict=True)
    ]
    torch.testing.assert_close(bank.delta(group, x), torch.cat(parts, dim=-1))
    assert bank.delta(group, x)[2].abs().max() == 0  # the base row gets no term
    base = torch.randn(3, 2, 32 + 16 + 16, generator=torch.Generator().manual_seed(2))
    out = base.clone()
    bank.add_delta(group, x, out)  # what the fast path's forward calls: in place, one kernel
    torch.testing.assert_close(out, base + bank.delta(group, x))


def test_on_a_bf16_base_the_terms_are_computed_in_bf16(peft_model):
    """peft keeps LoRA weights in fp32; the bank computes the terms in the activations' dtype
    (no conversion of x and back per layer), within bf16 rounding of the fp32 term."""
    layer = next(layer for _, layer in lora_layers(peft_model) if "a" in layer.lora_A)
    x = torch.randn(2, 1, layer.in_features, generator=torch.Generator().manual_seed(3))
    reference = LoraBank(peft_model, ("a",))
    reference.set_rows([("a",), ()])
    expected = reference.delta((layer,), x)
    bank = LoraBank(peft_model, ("a",))
    bank.set_rows([("a",), ()])
    got = bank.delta((layer,), x.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)


def test_mixed_batch_equals_each_adapter_alone_and_peft(peft_model, tokenizer):
    names = ["a", "__base__", "b", "a"]
    rows = rows_for(tokenizer)
    batched = generate_rows(peft_model, tokenizer, rows, names)
    alone = [
        generate_rows(peft_model, tokenizer, [row], [name])[0]
        for row, name in zip(rows, names, strict=True)
    ]
    peft_mixed = generate_rows_plain(peft_model, tokenizer, rows, names)
    assert texts(batched) == texts(alone) == texts(peft_mixed)
    base = generate_rows(peft_model, tokenizer, [rows[0]], ["__base__"])[0]
    assert batched[0].text != base.text  # the adapter really changes the row


def test_without_names_rows_use_the_active_adapter(peft_model, tokenizer):
    rows = rows_for(tokenizer)
    assert texts(generate_rows(peft_model, tokenizer, rows)) == texts(
        generate_rows_plain(peft_model, tokenizer, rows)
    )


def test_dora_rows_go_to_the_plain_path_and_the_others_stay_fast(tokenizer):
    dora = LoraConfig(r=4, target_modules=["q_proj"], use_dora=True, init_lora_weights=False)
    model = with_adapters(tokenizer, d=dora)
    assert fast_path_blocker(model, ("a", "b")) is None
    model.set_adapter("d")
    assert "DoRA" in fast_path_blocker(model)
    rows = rows_for(tokenizer, limit=8)
    assert texts(generate_rows(model, tokenizer, rows)) == texts(
        generate_rows_plain(model, tokenizer, rows)
    )
