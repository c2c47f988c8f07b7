"""The loss with the LM head only at supervised positions equals transformers' own loss."""

from __future__ import annotations

import pytest
import torch

from tiny import build_llama
from tuneforge.data import DataConfig, make_batches, prepare_data
from tuneforge.train.loss import supervised_loss_sum, supervised_token_count


def _batches(chat_data, tokenizer, packing: bool):
    prepared = prepare_data(DataConfig(path=str(chat_data), max_length=128), tokenizer)
    return make_batches(
        prepared.train[:12],
        batch_size=4,
        max_length=128,
        packing=packing,
        pad_token_id=tokenizer.pad_token_id,
        shuffle=False,
    )


@pytest.mark.parametrize("packing", [False, True])
def test_matches_transformers_loss(chat_data, tiny_tokenizer, packing):
    model = build_llama(tiny_tokenizer)
    for batch in _batches(chat_data, tiny_tokenizer, packing):
        count = supervised_token_count(batch)
        ours = supervised_loss_sum(model, batch) / count
        # transformers computes logits everywhere and averages over labelled next tokens.
        reference = model(**batch, use_cache=False).loss
        assert count > 0
        assert torch.allclose(ours, reference, atol=1e-5), (ours, reference)


def test_works_on_peft_model_and_only_adapters_get_grads(chat_data, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = build_llama(tiny_tokenizer)
    peft_model = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    batch = _batches(chat_data, tiny_tokenizer, packing=False)[0]
    ours = supervised_loss_sum(peft_model, batch) / supervised_token_count(batch)
    reference = peft_model(**batch, use_cache=False).loss
    assert torch.allclose(ours, reference, atol=1e-5)
    ours.backward()
    with_grad = {n for n, p in peft_model.named_parameters() if p.grad is not None}
    assert with_grad and all("lora_" in name for name in with_grad)


def test_head_sees_only_supervised_rows(chat_data, tiny_tokenizer):
    model = build_llama(tiny_tokenizer)
    batch = _batches(chat_data, tiny_tokenizer, packing=False)[0]
    rows = []
    handle = model.lm_head.register_forward_hook(
        lambda _m, inputs, _o: rows.append(inputs[0].shape)
    )
    supervised_loss_sum(model, batch)
    handle.remove()
    assert rows == [torch.Size([supervised_token_count(batch), model.config.hidden_size])]
    assert rows[0][0] < batch["input_ids"].numel() / 2  # prompt positions never reach the head
