"""The fused LoRA forward training uses (``methods.fuse_lora_updates``) against peft's own."""

from __future__ import annotations

import pytest
import torch

from tuneforge.train.config import TrainConfig
from tuneforge.train.methods import prepare_model

CPU = torch.device("cpu")


def _prepared(model_dir, **kwargs):
    config = TrainConfig(
        model=str(model_dir), progress=False, method="lora", **{"dtype": "float32", **kwargs}
    )
    prepared = prepare_model(config, CPU)
    torch.manual_seed(1)
    for name, param in prepared.model.named_parameters():
        if "lora_B" in name:  # fresh B is zero: give the update something to carry
            torch.nn.init.normal_(param, std=0.05)
    return prepared.model


def _lora_layers(model) -> list:
    from peft.tuners.lora.layer import Linear

    return [module for module in model.modules() if type(module) is Linear]


def _loss_and_grads(model, input_ids, autocast: bool, seed: int = 0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=input_ids).logits
    loss = logits.float().pow(2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach().float(), grads


def _peft_forward(model) -> None:
    """Back to peft's own forward (drop the instance attribute the fusing set)."""
    for layer in _lora_layers(model):
        del layer.forward


def _assert_same(fused, plain, tolerance: float) -> None:
    (logits, grads), (logits_plain, grads_plain) = fused, plain
    torch.testing.assert_close(logits, logits_plain, rtol=tolerance, atol=tolerance)
    assert grads.keys() == grads_plain.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], grads_plain[name], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    ("autocast", "tolerance"),
    [(False, 1e-5), (True, 3e-2)],
    ids=["fp32", "bf16-autocast"],
)
def test_training_gets_the_fused_forward_with_peft_outputs_and_gradients(
    tiny_model_dir, autocast, tolerance, monkeypatch
):
    from peft.tuners.lora.layer import Linear

    model = _prepared(tiny_model_dir)
    layers = _lora_layers(model)
    assert layers and all(type(layer.forward).__name__ == "_FusedLoraForward" for layer in layers)
    input_ids = torch.randint(0, 100, (3, 11))
    with monkeypatch.context() as patch:  # the fused path runs: no layer falls back to peft's
        patch.setattr(Linear, "forward", lambda *_a, **_k: pytest.fail("peft's forward ran"))
        fused = _loss_and_grads(model, input_ids, autocast)
    _peft_forward(model)
    _assert_same(fused, _loss_and_grads(model, input_ids, autocast), tolerance)


def test_dropout_draws_the_same_mask_as_peft(tiny_model_dir):
    model = _prepared(tiny_model_dir, lora_dropout=0.3)
    input_ids = torch.randint(0, 100, (2, 9))
    fused = _loss_and_grads(model, input_ids, autocast=False, seed=5)
    _peft_forward(model)
    _assert_same(fused, _loss_and_grads(model, input_ids, autocast=False, seed=5), 1e-5)


def test_dora_and_disabled_adapters_take_peft_forward(tiny_model_dir):
    model = _prepared(tiny_model_dir, use_dora=True)
    input_ids = torch.randint(0, 100, (2, 7))
    fused = _loss_and_grads(model, input_ids, autocast=False)
    assert any("magnitude" in name for name in fused[1])  # DoRA's own weights were trained
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=input_ids).logits
    _peft_forward(model)
    _assert_same(fused, _loss_and_grads(model, input_ids, autocast=False), 1e-5)
    with torch.no_grad(), model.disable_adapter():
        torch.testing.assert_close(base, model(input_ids=input_ids).logits)
