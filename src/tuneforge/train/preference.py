"""Preference objectives, DPO and ORPO, on prefix-shared pair rows.

A batch row holds a pair's prompt once, then the chosen and the rejected completion
(``tuneforge.data.preference``). ``pair_logps`` runs the decoder once per row under an attention
mask in which every token sees the prompt and its own completion only (rejected tokens never see
chosen ones; positions restart), so each completion is scored exactly as in its own conversation
while the prompt is computed once, not twice. The output head runs only on the positions that
predict a completion token, as for supervised loss (``tuneforge.train.loss``).

Losses, per pair (log-probabilities are sums over a completion's supervised tokens):

- DPO (Rafailov et al. 2023, eq. 7): ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``;
  the implicit rewards are ``beta * (pi - ref)``.
- ORPO (Hong et al. 2024, eqs. 2-7): with ``a = log P(y|x) / |y|`` the mean token log-probability
  and ``log odds(y|x) = a - log(1 - exp(a))``:
  ``-a_c - lambda * log sigmoid(log odds_c - log odds_r)``, lambda being ``beta``; the rewards
  logged are ``beta * a`` (as TRL logs them). The NLL term is per pair (the paper's expectation
  over pairs); TRL averages it over the batch's chosen tokens instead, equal when the chosen
  completions have one length.

DPO's reference (``tuning_vocabulary.REFERENCES``) is one of three ``Reference`` sources: the base
with the adapter disabled (peft's ``disable_adapter``, no second model), a frozen copy, or a
table of log-probs computed once before training (``precompute_reference``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from tuneforge.data.preference import PROMPT
from tuneforge.data.tokenization import IGNORE_INDEX
from tuneforge.train.loss import causal_lm_parts

Batch = dict[str, torch.Tensor]

LOG_PROB_CEILING = -1e-6
"""ORPO's mean token log-probability is clamped below this (nats): ``log(1 - exp(a))`` is
``-inf`` at ``a = 0``, which a model certain of every token reaches in fp32."""


@dataclass
class PairLogps:
    """Per-pair sums of token log-probabilities (nats) and supervised token counts, ``[B]``."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


def pair_attention_mask(
    branch_ids: torch.Tensor, attention: str, dtype: torch.dtype
) -> torch.Tensor:
    """The 4D attention mask of pair rows: causal, and each token sees the prompt and its own
    branch only (padding sees padding, so no softmax row is empty).

    Args:
        branch_ids: ``[B, T]``: 0 prompt, 1 chosen, 2 rejected, -1 padding.
        attention: the model's attention implementation: ``sdpa`` takes a boolean mask,
            ``eager`` adds a float one.
        dtype: the attention scores' dtype (the additive mask is built in it).

    Returns:
        ``[B, 1, T, T]`` (True / 0.0 where a query may attend to a key).
    """
    length = branch_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=branch_ids.device).tril()
    query, key = branch_ids[:, :, None], branch_ids[:, None, :]
    visible = (causal & ((key == PROMPT) | (key == query)))[:, None]
    if attention == "sdpa":
        return visible
    blocked = torch.zeros(visible.shape, dtype=dtype, device=branch_ids.device)
    return blocked.masked_fill_(~visible, torch.finfo(dtype).min)


def _scores_dtype(model: nn.Module, device: torch.device) -> torch.dtype:
    """The dtype attention scores are computed in: autocast's, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


def pair_logps(model: nn.Module, batch: Batch) -> PairLogps:
    """The chosen and rejected log-probabilities of every pair row of ``batch``.

    Args:
        model: a causal LM (transformers, optionally peft-wrapped).
        batch: from ``tuneforge.data.make_pair_batches`` (on the model's device).

    Returns:
        PairLogps with ``[B]`` tensors (the sums keep their graph; counts are floats).
    """
    decoder, head = causal_lm_parts(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = batch["input_ids"].device
    mask = pair_attention_mask(
        batch["branch_ids"], base.config._attn_implementation, _scores_dtype(model, device)
    )
    hidden = decoder(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=batch["position_ids"],
        use_cache=False,
    ).last_hidden_state  # [B, T, H]
    chosen, rejected = batch["chosen_targets"], batch["rejected_targets"]
    is_chosen, is_rejected = chosen != IGNORE_INDEX, rejected != IGNORE_INDEX
    # The prompt's last position predicts both completions' first token: it appears in both.
    rows = torch.cat([hidden[is_chosen], hidden[is_rejected]])  # [Nc + Nr, H]
    targets = torch.cat([chosen[is_chosen], rejected[is_rejected]])
    token_logps = -F.cross_entropy(head(rows).float(), targets, reduction="none")  # fp32
    size = chosen.shape[0]
    pair = torch.arange(size, device=device)[:, None].expand_as(chosen)
    owner = torch.cat([pair[is_chosen], pair[is_rejected] + size])  # [Nc + Nr] in 0..2B-1
    sums = torch.zeros(2 * size, device=device).index_add(0, owner, token_logps)
    counts = torch.bincount(owner, minlength=2 * size).float()
    return PairLogps(sums[:size], sums[size:], counts[:size], counts[size:])


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO per pair (Rafailov et al. 2023, eq. 7) and the implicit rewards.

    Args:
        chosen, rejected: the policy's completion log-probabilities ``[B]``.
        reference_chosen, reference_rejected: the reference's ``[B]``.
        beta: the KL coefficient.

    Returns:
        (losses ``[B]``, chosen rewards ``[B]``, rejected rewards ``[B]``; rewards detached).
    """
    chosen_ratio = chosen - reference_chosen
    rejected_ratio = rejected - reference_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def _log1mexp(value: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(value))`` for ``value < 0``, accurate on both sides of ``-log 2``
    (Mächler 2012)."""
    return torch.where(
        value > -math.log(2), torch.log(-torch.expm1(value)), torch.log1p(-torch.exp(value))
    )


def orpo_loss(logps: PairLogps, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO per pair (Hong et al. 2024): the chosen NLL plus ``beta`` times the odds-ratio loss.

    Returns:
        (losses ``[B]``, chosen rewards ``[B]``, rejected rewards ``[B]``; rewards detached).
    """
    mean_chosen = (logps.chosen / logps.chosen_tokens).clamp(max=LOG_PROB_CEILING)
    mean_rejected = (logps.rejected / logps.rejected_tokens).clamp(max=LOG_PROB_CEILING)
    log_odds = (mean_chosen - _log1mexp(mean_chosen)) - (mean_rejected - _log1mexp(mean_rejected))
    losses = -mean_chosen - beta * F.logsigmoid(log_odds)
    return losses, beta * mean_chosen.detach(), beta * mean_rejected.detach()


def _statistics(logps: PairLogps, chosen_rewards, rejected_rewards) -> dict[str, torch.Tensor]:
    """Summed statistics of a micro-batch (``PreferenceObjective.metrics`` averages them)."""
    return {
        "reward_margin": (chosen_rewards - rejected_rewards).sum(),
        "preference_accuracy": (chosen_rewards > rejected_rewards).sum(),
        "chosen_logps": logps.chosen.detach().sum(),
        "rejected_logps": logps.rejected.detach().sum(),
        "nll": -(logps.chosen.detach().sum() + logps.rejected.detach().sum()),
        "tokens": (logps.chosen_tokens + logps.rejected_tokens).sum(),
    }


class Reference(Protocol):
    """Where DPO's reference log-probabilities come from."""

    def logps(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen ``[B]``, rejected ``[B]``) reference log-probabilities, without a graph."""
        ...


class AdapterDisabledReference:
    """``base``: the policy's own base with its LoRA adapter disabled (no second model)."""

    def logps(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), model.disable_adapter():
            result = pair_logps(model, batch)
        return result.chosen, result.rejected


class FrozenCopyReference:
    """``copy``: a frozen copy of the starting model, kept in the compute dtype."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        self.model = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)

    def logps(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            result = pair_logps(self.model, batch)
        return result.chosen, result.rejected


class PrecomputedReference:
    """``precomputed``: a table of log-probs indexed by the batches' ``pair_index``.

    Attributes:
        table: ``[pairs, 2]`` (chosen, rejected) fp32 log-probs, on the training device.
    """

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table

    def logps(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        values = self.table[batch["pair_index"]]
        return values[:, 0], values[:, 1]


@torch.no_grad()
def precompute_reference(
    model: nn.Module, batches: list[Batch], pairs: int, device: torch.device, autocast
) -> PrecomputedReference:
    """Score every pair once with ``model`` as it is now (the run's starting model), in eval
    mode (no dropout).

    Args:
        batches: pair batches covering every ``pair_index`` below ``pairs`` (an epoch's
            training batches and the validation batches).
        pairs: the size of the table.
        autocast: a callable returning the forward's autocast context.
    """
    table = torch.zeros(pairs, 2)
    was_training = model.training
    model.eval()
    for batch in batches:
        moved = {key: value.to(device) for key, value in batch.items()}
        with autocast():
            result = pair_logps(model, moved)
        values = torch.stack([result.chosen, result.rejected], dim=1).float().cpu()
        table[batch["pair_index"]] = values
    model.train(was_training)
    return PrecomputedReference(table.to(device))


class PairObjective:
    """What DPO and ORPO share: pairs as units, per-pair statistics, the guard's token NLL."""

    name = ""

    def units(self, batch: Batch) -> int:
        """Pairs."""
        return int(batch["pair_index"].numel())

    def metrics(self, sums: dict[str, float], units: float) -> dict[str, float]:
        """Per-pair means: reward margin, preference accuracy (chosen rewarded above
        rejected), chosen and rejected log-probs."""
        names = ("reward_margin", "preference_accuracy", "chosen_logps", "rejected_logps")
        return {name: sums[name] / units for name in names}

    def token_nll(self, loss: float, sums: dict[str, float]) -> float:
        """Mean NLL over both completions' tokens."""
        return sums["nll"] / max(sums["tokens"], 1.0)


class DirectPreference(PairObjective):
    """``dpo`` against a reference (see the module docstring); losses averaged over pairs.

    Args:
        beta: the KL coefficient.
        reference: where the reference log-probs come from.
    """

    name = "dpo"

    def __init__(self, beta: float, reference: Reference) -> None:
        self.beta, self.reference = beta, reference

    def loss_parts(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        """The summed per-pair losses and statistics of a micro-batch."""
        # The reference first: its activations are freed before the policy's are kept.
        reference_chosen, reference_rejected = self.reference.logps(model, batch)
        policy = pair_logps(model, batch)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy.chosen, policy.rejected, reference_chosen, reference_rejected, self.beta
        )
        return losses.sum(), _statistics(policy, chosen_rewards, rejected_rewards)


class OddsRatioPreference(PairObjective):
    """``orpo`` (no reference); losses averaged over pairs.

    Args:
        beta: the odds-ratio term's weight (lambda in the paper).
    """

    name = "orpo"

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def loss_parts(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        """The summed per-pair losses and statistics of a micro-batch."""
        policy = pair_logps(model, batch)
        losses, chosen_rewards, rejected_rewards = orpo_loss(policy, self.beta)
        return losses.sum(), _statistics(policy, chosen_rewards, rejected_rewards)
