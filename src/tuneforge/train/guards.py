"""What stops a run that went wrong instead of reporting it ``completed``.

- A NaN or infinite loss or gradient norm: ``fit`` stops before the optimizer applies it.
- A collapse to the uniform distribution: too large a learning rate can flatten the output so
  that every token gets the same probability. The loss then sits at the uniform entropy
  ``ln(vocab_size)`` (10.80 nats for a 49,152-token vocabulary), the gradient is exactly zero
  (saturated layers pass nothing back), and nothing ever changes again, without a NaN in sight.
  ``CollapseWatch`` recognises it: loss within ``LOSS_TOLERANCE`` of ``ln(vocab_size)`` *and*
  gradient norm at most ``GRAD_NORM_FLOOR``, for ``STEPS`` consecutive steps. A healthy model
  can sit near the uniform loss (a randomly initialised one starts there) but then its gradient
  is large: at uniform predictions the gradient of the logits is ``p - onehot``, of norm ~1.
  The loss watched is the objective's mean NLL per supervised token (``Objective.token_nll``):
  the loss itself for sft; for dpo and orpo, whose losses are per pair, the completions' NLL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuneforge.errors import TuneforgeError


class TrainingDivergedError(TuneforgeError):
    """The loss or gradient norm became NaN or infinite, or the model collapsed to the uniform
    distribution."""


@dataclass
class CollapseWatch:
    """Counts consecutive steps at the uniform loss with no gradient.

    Attributes:
        vocab_size: the output head's size (its uniform entropy is ``ln(vocab_size)`` nats).
        first_step: the first step of the current run of collapsed steps, or None.
        steps: how many consecutive steps looked collapsed.
    """

    vocab_size: int
    first_step: int | None = None
    steps: int = 0

    STEPS = 3
    LOSS_TOLERANCE = 1e-3  # relative to ln(vocab_size): 0.011 nats for 49,152 tokens
    GRAD_NORM_FLOOR = 1e-6

    @property
    def uniform_loss(self) -> float:
        """``ln(vocab_size)``: the loss of predicting every token with the same probability."""
        return math.log(self.vocab_size)

    @property
    def suspected(self) -> bool:
        """True while the latest steps look collapsed (not yet long enough to stop)."""
        return self.steps > 0

    def update(self, step: int, loss: float, grad_norm: float) -> bool:
        """Record a step (1-based); True once ``STEPS`` consecutive steps looked collapsed."""
        flat = abs(loss - self.uniform_loss) <= self.LOSS_TOLERANCE * self.uniform_loss
        if flat and grad_norm <= self.GRAD_NORM_FLOOR:
            self.first_step = step if self.steps == 0 else self.first_step
            self.steps += 1
        else:
            self.first_step, self.steps = None, 0
        return self.steps >= self.STEPS

    def message(self, step: int, loss: float, kept: str) -> str:
        """What happened and what to change, for TrainingDivergedError."""
        return (
            f"step {step}: the model collapsed to the uniform distribution: loss {loss:.4f} = "
            f"ln({self.vocab_size}) = {self.uniform_loss:.4f} with a zero gradient since step "
            f"{self.first_step}, so training cannot make progress; stopped without saving an "
            f"output ({kept}). Lower 'lr' (and keep 'max_grad_norm' > 0 and a warmup), then "
            "start a new run with --force"
        )
