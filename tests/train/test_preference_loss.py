"""DPO and ORPO losses: the papers' formulas on a fixed batch, computed here independently with a
stock transformers forward per conversation, and TRL's DPOTrainer on the same tokens (skipped
without trl); prefix-shared rows score each completion as its own conversation; the reference
with the adapter disabled is the base model."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tiny import build_llama
from tuneforge.data import DataConfig, make_pair_batches, prepare_data
from tuneforge.data.preference import TokenizedPair
from tuneforge.train.objectives import SupervisedObjective
from tuneforge.train.preference import (
    AdapterDisabledReference,
    DirectPreference,
    FrozenCopyReference,
    OddsRatioPreference,
    pair_logps,
    precompute_reference,
)

BETA = 0.3


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, tiny_tokenizer) -> list[TokenizedPair]:
    """Six pairs of different prompt and completion lengths (a fixed batch)."""
    records = [
        {
            "prompt": [
                {"role": "system", "content": "Reply with JSON."},
                {"role": "user", "content": f"{i + 1} lamps to Oslo" + " please" * i},
            ],
            "chosen": [{"role": "assistant", "content": json.dumps({"quantity": i + 1})}],
            "rejected": [{"role": "assistant", "content": "Sure! " * (i % 3 + 1) + "lamps"}],
        }
        for i in range(6)
    ]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return prepare_data(DataConfig(path=str(path)), tiny_tokenizer).train


def _batch(pairs):
    (batch,) = make_pair_batches(pairs, batch_size=len(pairs), pad_token_id=0, shuffle=False)
    return batch


def reference_logps(model, pair: TokenizedPair) -> tuple[float, float, int, int]:
    """Sum and count of each completion's supervised token log-probs, from a stock forward of
    that conversation alone (full logits, log_softmax)."""
    result = []
    for ids, labels in (
        (pair.chosen_ids, pair.chosen_labels),
        (pair.rejected_ids, pair.rejected_labels),
    ):
        sequence = torch.tensor([pair.prompt_ids + ids])
        targets = torch.tensor([[-100] * len(pair.prompt_ids) + labels])[0, 1:]
        with torch.no_grad():
            logits = model(input_ids=sequence).logits[0, :-1].double()
        kept = targets != -100
        logps = torch.log_softmax(logits[kept], -1).gather(1, targets[kept][:, None])
        result.append((float(logps.sum()), int(kept.sum())))
    return result[0][0], result[1][0], result[0][1], result[1][1]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_prefix_shared_rows_score_each_completion_as_its_own_conversation(
    pairs, tiny_tokenizer, attention
):
    model = build_llama(tiny_tokenizer, seed=1)
    model.config._attn_implementation = attention
    batch = _batch(pairs)
    with torch.no_grad():
        got = pair_logps(model, batch)
    for row, index in enumerate(batch["pair_index"].tolist()):
        chosen, rejected, chosen_n, rejected_n = reference_logps(model, pairs[index])
        assert float(got.chosen[row]) == pytest.approx(chosen, abs=1e-4)
        assert float(got.rejected[row]) == pytest.approx(rejected, abs=1e-4)
        assert (int(got.chosen_tokens[row]), int(got.rejected_tokens[row])) == (
            chosen_n,
            rejected_n,
        )


def test_dpo_loss_equals_rafailov_et_al_eq_7(pairs, tiny_tokenizer):
    policy, reference = build_llama(tiny_tokenizer, seed=1), build_llama(tiny_tokenizer, seed=2)
    batch = _batch(pairs)
    objective = DirectPreference(BETA, FrozenCopyReference(reference, torch.float32))
    loss_sum, sums = objective.loss_parts(policy, batch)
    ours = float(loss_sum.detach()) / objective.units(batch)
    losses, margins, wins = [], [], []
    for index in batch["pair_index"].tolist():
        pc, pr, _, _ = reference_logps(policy, pairs[index])
        rc, rr, _, _ = reference_logps(reference, pairs[index])
        # L_DPO = -log sigmoid(beta log(pi(y_w)/ref(y_w)) - beta log(pi(y_l)/ref(y_l)))
        delta = BETA * (pc - rc) - BETA * (pr - rr)
        losses.append(math.log1p(math.exp(-delta)))
        margins.append(delta)
        wins.append(delta > 0)
    assert ours == pytest.approx(sum(losses) / len(losses), abs=1e-5)
    metrics = objective.metrics({k: float(v) for k, v in sums.items()}, objective.units(batch))
    assert metrics["reward_margin"] == pytest.approx(sum(margins) / len(margins), abs=1e-5)
    assert metrics["preference_accuracy"] == pytest.approx(sum(wins) / len(wins))


def test_orpo_loss_equals_hong_et_al(pairs, tiny_tokenizer):
    policy = build_llama(tiny_tokenizer, seed=3)
    batch = _batch(pairs)
    objective = OddsRatioPreference(BETA)
    loss_sum, _ = objective.loss_parts(policy, batch)
    losses = []
    for index in batch["pair_index"].tolist():
        pc, pr, nc, nr = reference_logps(policy, pairs[index])
        mean_c, mean_r = pc / nc, pr / nr  # log P(y|x) averaged over the reply's tokens
        # odds(y|x) = P / (1 - P); L_OR = -log sigmoid(log(odds_w / odds_l)); L = L_SFT + l L_OR
        log_odds = (mean_c - math.log1p(-math.exp(mean_c))) - (
            mean_r - math.log1p(-math.exp(mean_r))
        )
        losses.append(-mean_c + BETA * math.log1p(math.exp(-log_odds)))
    assert float(loss_sum.detach()) / objective.units(batch) == pytest.approx(
        sum(losses) / len(losses), abs=1e-5
    )


def test_orpo_loss_and_gradient_stay_finite_for_a_certain_model():
    from tuneforge.train.preference import PairLogps, orpo_loss

    chosen = torch.tensor([0.0, -1e-9], requires_grad=True)  # P(y|x) = 1 in fp32
    logps = PairLogps(chosen, torch.tensor([-3.0, -2.0]), torch.ones(2), torch.ones(2))
    losses, _, _ = orpo_loss(logps, BETA)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(chosen.grad).all()


def test_the_reference_with_the_adapter_disabled_is_the_base_model(pairs, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    base = build_llama(tiny_tokenizer, seed=4)
    with torch.no_grad():
        expected = pair_logps(base, _batch(pairs))
    model = get_peft_model(
        build_llama(tiny_tokenizer, seed=4),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
    )
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # a trained adapter: the policy differs
    batch = _batch(pairs)
    chosen, rejected = AdapterDisabledReference().logps(model, batch)
    assert torch.allclose(chosen, expected.chosen, atol=1e-5)
    assert torch.allclose(rejected, expected.rejected, atol=1e-5)
    with torch.no_grad():
        policy = pair_logps(model, batch)
    assert not torch.allclose(policy.chosen, expected.chosen, atol=1e-2)
    # The adapter is back on afterwards, and training through it works.
    loss_sum, _ = DirectPreference(BETA, AdapterDisabledReference()).loss_parts(model, batch)
    loss_sum.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())


def test_a_precomputed_reference_equals_scoring_in_the_step(pairs, tiny_tokenizer):
    model = build_llama(tiny_tokenizer, seed=5)
    batches = make_pair_batches(pairs, batch_size=4, pad_token_id=0, seed=1, epoch=0)
    table = precompute_reference(
        model,
        batches,
        len(pairs),
        torch.device("cpu"),
        lambda: torch.autocast("cpu", enabled=False),
    )
    copy = FrozenCopyReference(model, torch.float32)
    for batch in make_pair_batches(pairs, batch_size=3, pad_token_id=0, seed=2, epoch=1):
        for got, want in zip(table.logps(model, batch), copy.logps(model, batch), strict=True):
            assert torch.allclose(got, want, atol=1e-4)


def test_the_guard_watches_the_token_nll():
    sums = {"nll": 30.0, "tokens": 12.0}
    assert OddsRatioPreference(0.1).token_nll(0.69, sums) == 2.5
    assert SupervisedObjective().token_nll(1.25, {}) == 1.25


def test_sdpa_mask_rows_see_the_prompt_and_their_own_branch_only():
    from tuneforge.train.preference import pair_attention_mask

    branches = torch.tensor([[0, 0, 1, 1, 2, 2, -1]])
    mask = pair_attention_mask(branches, "sdpa", torch.float32)[0, 0].int().tolist()
    assert mask[3] == [1, 1, 1, 1, 0, 0, 0]  # chosen: prompt + chosen so far
    assert mask[5] == [1, 1, 0, 0, 1, 1, 0]  # rejected: prompt + rejected, never chosen
    assert mask[6] == [1, 1, 0, 0, 0, 0, 1]  # padding sees something: no empty softmax row
    additive = pair_attention_mask(branches, "eager", torch.bfloat16)
    assert additive.dtype == torch.bfloat16
    assert additive[0, 0, 5, 2] == torch.finfo(torch.bfloat16).min and additive[0, 0, 5, 4] == 0
    assert F.softmax(additive[0, 0].float(), -1)[5, 2] == 0


def _trl_inputs(pairs: list[TokenizedPair]) -> dict[str, torch.Tensor]:
    """TRL's DPO batch for the same tokens: the chosen conversations, then the rejected ones,
    right-padded, with ``completion_mask`` = 1 on the tokens that carry loss."""
    rows = [(p.prompt_ids + p.chosen_ids, p.chosen_labels, len(p.prompt_ids)) for p in pairs]
    rows += [(p.prompt_ids + p.rejected_ids, p.rejected_labels, len(p.prompt_ids)) for p in pairs]
    width = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    completion = torch.zeros_like(input_ids)
    for row, (ids, labels, prompt) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        completion[row, prompt : len(ids)] = torch.tensor([int(t != -100) for t in labels])
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


def test_dpo_loss_equals_trls_dpo_trainer_on_the_same_tokens(pairs, tiny_tokenizer, tmp_path):
    """TRL's DPOTrainer (sigmoid loss, a new LoRA adapter: its reference is the base with the
    adapter disabled) and ours give the same loss on the same pairs, model and adapter."""
    pytest.importorskip("trl", reason="trl not installed (only this parity test uses it)")
    datasets = pytest.importorskip("datasets", reason="datasets not installed (TRL needs it)")
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    records = [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        }
    ]  # TRL wants a dataset to build; the batch compared is ours, below
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=BETA,
        report_to=[],
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
    )
    trainer = DPOTrainer(
        model=build_llama(tiny_tokenizer, seed=6),
        args=args,
        train_dataset=datasets.Dataset.from_list(records),
        processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
    )
    model = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # a trained adapter: policy and reference differ
    model.train()
    theirs = float(trainer.compute_loss(model, _trl_inputs(pairs)))
    objective = DirectPreference(BETA, AdapterDisabledReference())
    loss_sum, _ = objective.loss_parts(model, _batch(pairs))
    ours = float(loss_sum.detach()) / objective.units(_batch(pairs))
    assert abs(ours - math.log(2)) > 1e-2  # the adapter moved the policy: not the trivial ln 2
    assert ours == pytest.approx(theirs, abs=1e-5)
