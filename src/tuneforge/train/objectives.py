"""What ``fit`` optimises: the small interface every training objective implements.

``fit`` never branches on the objective. Per micro-batch it asks the objective for the summed
loss and summed statistics (``loss_parts``), divides by the step's *units* (supervised tokens for
``sft``, pairs for ``dpo`` and ``orpo``; counted on the CPU batches, so accumulation and every
process count give one step the same loss), and logs the statistics the objective reports
(``metrics``). The collapse guard watches the objective's per-token negative log-likelihood
(``token_nll``), which is the loss itself for ``sft``.

The preference objectives live in ``tuneforge.train.preference``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from tuneforge.train.config import TrainConfig
from tuneforge.train.loss import autocast_for, supervised_loss_sum, supervised_token_count
from tuneforge.tuning_vocabulary import resolve_reference

Batch = dict[str, torch.Tensor]

PROGRESS_NAMES = {
    "reward_margin": "margin",
    "preference_accuracy": "acc",
    "chosen_logps": "logp_c",
    "rejected_logps": "logp_r",
}
"""Short names of logged statistics in the progress line."""


class Objective(Protocol):
    """A training objective (see the module docstring)."""

    name: str

    def units(self, batch: Batch) -> int:
        """What a step's loss is averaged over, in this (CPU) batch."""
        ...

    def loss_parts(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        """(summed loss with its graph, summed statistics as detached 0-dim tensors)."""
        ...

    def metrics(self, sums: dict[str, float], units: float) -> dict[str, float]:
        """The statistics to log, from the step's (or validation's) sums and units."""
        ...

    def token_nll(self, loss: float, sums: dict[str, float]) -> float:
        """Mean negative log-likelihood per supervised token (nats), for the collapse guard."""
        ...


class SupervisedObjective:
    """``sft``: cross-entropy over the supervised tokens (``loss.supervised_loss_sum``)."""

    name = "sft"

    def units(self, batch: Batch) -> int:
        """Supervised tokens."""
        return supervised_token_count(batch)

    def loss_parts(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        """The summed cross-entropy; no statistics beyond the loss."""
        return supervised_loss_sum(model, batch), {}

    def metrics(self, sums: dict[str, float], units: float) -> dict[str, float]:
        """Nothing besides the loss."""
        return {}

    def token_nll(self, loss: float, sums: dict[str, float]) -> float:
        """The loss is the mean token NLL."""
        return loss


def build_objective(
    config: TrainConfig,
    model: nn.Module,
    all_batches: Callable[[], list[Batch]],
    device: torch.device,
    compute_dtype: torch.dtype,
    log: Callable[[str], None] = print,
) -> Objective:
    """The objective ``config`` asks for, with DPO's reference built for ``model``.

    Call it on the prepared model before it is compiled or wrapped for several processes:
    a ``copy`` reference copies it, a ``precomputed`` one scores every pair with it.

    Args:
        model: the prepared model, as training starts (its starting weights are the
            reference's).
        all_batches: returns the pair batches to score (the training batches the run will
            use and the validation ones); called only for a precomputed reference.
        log: where a precomputation reports its time.
    """
    from tuneforge.train.preference import (
        AdapterDisabledReference,
        DirectPreference,
        FrozenCopyReference,
        OddsRatioPreference,
        precompute_reference,
    )

    if config.objective == "sft":
        return SupervisedObjective()
    if config.objective == "orpo":
        return OddsRatioPreference(config.beta)
    reference = resolve_reference(
        config.reference, config.objective, config.method, config.init_adapter is not None
    )
    if reference == "base":
        return DirectPreference(config.beta, AdapterDisabledReference())
    if reference == "copy":
        return DirectPreference(config.beta, FrozenCopyReference(model, compute_dtype))
    start = time.perf_counter()
    batches = all_batches()
    pairs = 1 + max(int(batch["pair_index"].max()) for batch in batches)
    table = precompute_reference(
        model, batches, pairs, device, lambda: autocast_for(device, compute_dtype)
    )
    scored = sum(int(batch["pair_index"].numel()) for batch in batches)
    log(
        f"reference: log-probs of {scored} pairs precomputed with the starting model in "
        f"{time.perf_counter() - start:.1f} s (once; no reference model during training)"
    )
    return DirectPreference(config.beta, table)
