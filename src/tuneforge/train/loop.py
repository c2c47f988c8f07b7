"""The one training loop, ``fit``, that every method and objective runs.

Per optimizer step: run ``grad_accum`` micro-batches, each loss divided by the units of the whole
step (supervised tokens for sft, pairs for dpo and orpo: ``tuneforge.train.objectives``), so
accumulation equals one big batch; clip, step AdamW and the schedule.
Validation, early stopping and checkpoints happen between steps. A non-finite loss or gradient
norm, or a collapse to the uniform distribution (``tuneforge.train.guards``), stops the run
before the optimizer applies the step, keeping the last good checkpoint. SIGINT/SIGTERM stop it
at a step boundary after a checkpoint (``tuneforge.train.signals``).

Multi-process runs pass a ``Parallel`` (see ``tuneforge.train.parallel``): a step then takes
``grad_accum x world_size`` micro-batches, each rank runs its share, and only rank 0 logs and
writes; the loss and the update equal those of one process with that much accumulation.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGINT, SIGTERM, Signals

import torch
from torch import nn

from tuneforge.errors import TuneforgeError
from tuneforge.progress import Progress
from tuneforge.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_checkpoints_from,
    save_checkpoint,
)
from tuneforge.train.config import TrainConfig
from tuneforge.train.guards import CollapseWatch, TrainingDivergedError
from tuneforge.train.loss import autocast_for, output_size
from tuneforge.train.metrics import MetricsLog, peak_memory_bytes, reset_peak_memory
from tuneforge.train.objectives import PROGRESS_NAMES, Objective, SupervisedObjective
from tuneforge.train.parallel import Parallel, full_tensor
from tuneforge.train.signals import StopSignals, TrainingInterrupted

Batch = dict[str, torch.Tensor]


@dataclass
class TrainingData:
    """What ``fit`` reads.

    Attributes:
        epoch_batches: returns the micro-batches of an epoch; must be deterministic for a given
            epoch (resume regenerates the epoch and skips to the saved batch index).
        val_batches: validation micro-batches (may be empty).
        count_tokens: real (non-pad) tokens of a batch, for tokens/s.
        supervised_fraction: share of real tokens that carry loss (for the memory plan).
    """

    epoch_batches: Callable[[int], list[Batch]]
    val_batches: list[Batch] = field(default_factory=list)
    count_tokens: Callable[[Batch], int] = lambda batch: int(batch["input_ids"].numel())
    supervised_fraction: float = 1.0


@dataclass
class FitResult:
    """How a ``fit`` call ended.

    Attributes:
        steps: optimizer steps completed in total (resumed ones included).
        stop_reason: ``completed`` or ``early_stopping``.
        final_loss: mean supervised loss of the last step (nats per token).
        best_val_loss: lowest validation loss seen (None without validation data).
        tokens: real tokens processed in this call.
        seconds: wall time of this call's training steps.
        peak_memory_bytes: peak RSS (CPU) or peak allocated CUDA memory.
    """

    steps: int
    stop_reason: str
    final_loss: float | None
    best_val_loss: float | None
    tokens: int
    seconds: float
    peak_memory_bytes: int

    @property
    def tokens_per_second(self) -> float:
        """Real tokens per second of training-step time."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def total_steps(config: TrainConfig, data: TrainingData, world_size: int = 1) -> int:
    """Optimizer steps of the run: ``max_steps``, or every epoch's batches grouped by
    ``grad_accum x world_size``."""
    if config.max_steps is not None:
        return config.max_steps
    return sum(
        math.ceil(len(data.epoch_batches(epoch)) / (config.grad_accum * world_size))
        for epoch in range(config.epochs)
    )


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: torch's (fp32 states) or bitsandbytes' 8-bit one."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TuneforgeError("the model has no trainable parameters; check method/target_modules")
    if config.optimizer == "adamw":
        # fused: one kernel for every parameter instead of ~10 ops per tensor (CPU and CUDA).
        fused = all(p.dtype in (torch.float32, torch.bfloat16, torch.float16) for p in params)
        optimizer = torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None
        )
    else:
        import bitsandbytes as bnb

        kind = config.optimizer
        cls = bnb.optim.AdamW8bit if kind == "adamw_8bit" else bnb.optim.PagedAdamW8bit
        optimizer = cls(params, lr=config.lr, weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        # The peak rate build_scheduler scales; set here so that a fresh optimizer and one
        # loaded from a checkpoint hold the same keys (FSDP's loader insists).
        group["initial_lr"] = config.lr
    return optimizer


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int, start_step: int = 0
):
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine, linear or constant.

    The learning rate is a function of the step and the run's total steps only, so a resumed
    run rebuilds the schedule instead of loading one: ``start_step`` (the steps already done)
    puts it where an uninterrupted run of ``steps`` steps would be. A run extended to more steps
    gets the schedule of its new total from its current step on: the rate it would have had,
    had it been planned that long (no restart of the warmup, no step at the old schedule's 0.0).

    Args:
        optimizer: from ``build_optimizer`` (its groups hold ``initial_lr``, the peak rate).
        steps: the run's total optimizer steps.
        start_step: optimizer steps already done (0 for a new run).
    """
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = int(config.warmup_ratio * steps)
    last = start_step - 1  # torch counts the construction as a step
    if config.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, steps, last_epoch=last)
    if config.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, steps, last_epoch=last)
    return get_constant_schedule_with_warmup(optimizer, warmup, last_epoch=last)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def rank_share(group: list[Batch], parallel: Parallel) -> list[tuple[Batch, float]]:
    """This rank's micro-batches of a step, each with its weight (0 for padding).

    Rank r takes ``group[r::world_size]``; ranks with fewer get weight-0 copies of a batch so
    every rank runs the same number of forward/backward passes (collectives stay in step).
    """
    world = parallel.world_size
    share = [(batch, 1.0) for batch in group[parallel.rank :: world]]
    rounds = math.ceil(len(group) / world)
    share += [(group[0], 0.0)] * (rounds - len(share))
    return share


def _loss_parts(
    model: nn.Module, parallel: Parallel, objective: Objective, batch: Batch
) -> tuple[torch.Tensor, dict]:
    if parallel.module is not None:
        return parallel.module(batch)  # the wrapped LossModule runs the same objective
    return objective.loss_parts(model, batch)


def _add(totals: dict[str, torch.Tensor], sums: dict, weight: float) -> None:
    """Accumulate a micro-batch's statistics on the device (one host sync per step, later)."""
    for name, value in sums.items():
        totals[name] = totals.get(name, 0.0) + weight * value.detach().double()


def _floats(totals: dict[str, torch.Tensor]) -> tuple[list[str], list[float]]:
    names = sorted(totals)
    return names, (torch.stack([totals[n] for n in names]).tolist() if names else [])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: list[Batch],
    device: torch.device,
    compute_dtype: torch.dtype,
    parallel: Parallel | None = None,
    objective: Objective | None = None,
) -> tuple[float, dict[str, float]]:
    """The objective's mean loss and statistics over validation batches (shared among ranks).

    Returns:
        (loss per unit: nats per supervised token for sft, per pair for dpo/orpo; the
        objective's metrics, e.g. reward margin and preference accuracy).
    """
    parallel = parallel or Parallel()
    objective = objective or SupervisedObjective()
    was_training = model.training
    model.eval()
    total, count, totals = 0.0, 0, {}
    for batch, weight in rank_share(batches, parallel) if batches else []:
        count += int(weight) * objective.units(batch)
        batch = _to_device(batch, device)
        with autocast_for(device, compute_dtype):
            loss, sums = _loss_parts(model, parallel, objective, batch)
        total += weight * float(loss)
        _add(totals, sums, weight)
    names, values = _floats(totals)
    total, count, *values = parallel.sum([total, count, *values], device)
    parallel.reshard()
    model.train(was_training)
    if not count:
        return float("nan"), {}
    return total / count, objective.metrics(dict(zip(names, values, strict=True)), count)


def evaluate_loss(
    model: nn.Module,
    batches: list[Batch],
    device: torch.device,
    compute_dtype: torch.dtype,
    parallel: Parallel | None = None,
) -> float:
    """Mean supervised loss (nats per token) over validation batches (shared among ranks)."""
    return evaluate(model, batches, device, compute_dtype, parallel)[0]


@dataclass
class StepResult:
    """One optimizer step's numbers (before the optimizer applies it).

    Attributes:
        loss: mean loss over the whole step (per supervised token, or per pair).
        grad_norm: gradient norm before clipping.
        units: supervised tokens (sft) or pairs (dpo, orpo) of the step.
        sums: the objective's statistics summed over the step (every rank).
    """

    loss: float
    grad_norm: float
    units: int
    sums: dict[str, float]


def _train_step(
    model: nn.Module,
    group: list[Batch],
    params: list[torch.nn.Parameter],
    config: TrainConfig,
    device: torch.device,
    compute_dtype: torch.dtype,
    parallel: Parallel,
    objective: Objective,
) -> StepResult:
    """Forward/backward a step's micro-batches (this rank's share of them)."""
    units = max(sum(objective.units(b) for b in group), 1)
    # DDP and FSDP average gradients over ranks; the step's loss is their sum.
    scale = parallel.world_size / units
    loss_sum = torch.zeros((), device=device)
    totals: dict[str, torch.Tensor] = {}
    share = rank_share(group, parallel)
    for index, (batch, weight) in enumerate(share):
        batch = _to_device(batch, device)
        with parallel.no_sync(last=index == len(share) - 1):
            with autocast_for(device, compute_dtype):
                part, sums = _loss_parts(model, parallel, objective, batch)
                part = part * weight
            (part * scale).backward()
        loss_sum += part.detach()
        _add(totals, sums, weight)
    names, values = _floats(totals)
    loss_total, *values = parallel.sum([float(loss_sum), *values], device)
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    sums = dict(zip(names, values, strict=True))
    return StepResult(loss_total / units, float(full_tensor(grad_norm)), units, sums)


class _Checkpoints:
    """The loop's checkpoint writer: at most one checkpoint per step, and the clock of
    ``save_every_minutes`` (minutes since the last checkpoint, or since training started)."""

    def __init__(
        self,
        run_dir: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        state: dict,
        config: TrainConfig,
        parallel: Parallel,
        saved_step: int | None,
    ) -> None:
        self.run_dir, self.model, self.optimizer = run_dir, model, optimizer
        self.state, self.config, self.parallel = state, config, parallel
        self.saved_step = saved_step  # the step of the newest checkpoint (None: none yet)
        self.saved_at = time.monotonic()

    def clock_due(self) -> bool:
        """True when ``save_every_minutes`` have passed since the last checkpoint."""
        minutes = self.config.save_every_minutes
        trained = self.state["step"] > (self.saved_step or 0)  # a step since the last one
        return trained and minutes > 0 and time.monotonic() - self.saved_at >= minutes * 60

    def save(self) -> Path:
        """Checkpoint the current step unless it already is; return its folder (every rank)."""
        step = self.state["step"]
        if self.saved_step != step:
            save_checkpoint(
                self.run_dir,
                step,
                self.model,
                self.optimizer,
                self.state,
                self.config.keep_checkpoints,
                self.parallel,
            )
            self.saved_step = step
        self.saved_at = time.monotonic()
        return self.run_dir / "checkpoints" / f"step-{step}"


def _kept(run_dir: Path) -> str:
    kept = latest_checkpoint(run_dir)
    return f"the last good checkpoint is {kept}" if kept else "no good checkpoint was saved"


def fit(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    run_dir: Path,
    *,
    device: torch.device,
    compute_dtype: torch.dtype = torch.float32,
    parallel: Parallel | None = None,
    objective: Objective | None = None,
) -> FitResult:
    """Train ``model`` in place.

    Checkpoints (``run_dir/checkpoints/step-N``) are written every ``save_every`` steps, once
    ``save_every_minutes`` have passed since the last one, at the end (so a finished run can be
    extended), and when SIGINT or SIGTERM asks the run to stop: the signal is honoured at the
    next step boundary, agreed by every rank (see ``tuneforge.train.signals``).

    Args:
        model: a prepared model (see ``tuneforge.train.methods``), in train mode.
        data: the batches; see TrainingData.
        config: the run's config (steps, accumulation, schedule, eval/save cadence).
        run_dir: where ``metrics.jsonl`` and ``checkpoints/`` go.
        device: where batches are moved.
        compute_dtype: ``torch.bfloat16`` runs forward/backward under autocast.
        parallel: the process group and wrapped model of a multi-process run (see
            ``tuneforge.train.parallel``); None for one process.
        objective: what is optimised (``tuneforge.train.objectives``); None for sft. With
            ``parallel``, the one its wrapped module was built with.

    Returns:
        a FitResult.

    Raises:
        TrainingDivergedError: the loss or gradient norm became NaN or infinite (no weight was
            updated with it), or the model collapsed to the uniform distribution (see
            ``tuneforge.train.guards``); the last good checkpoint is kept.
        TrainingInterrupted: SIGINT or SIGTERM stopped the run after a checkpoint.
    """

    run_dir = Path(run_dir)
    parallel = parallel or Parallel()
    objective = objective or SupervisedObjective()
    is_main = parallel.is_main
    params = [p for p in model.parameters() if p.requires_grad]
    steps = total_steps(config, data, parallel.world_size)
    group_size = config.grad_accum * parallel.world_size
    optimizer = build_optimizer(model, config)
    state = {
        "step": 0,
        "epoch": 0,
        "batch_index": 0,
        "best_val_loss": None,
        "bad_evals": 0,
        "last_eval_step": 0,
    }
    checkpoint = latest_checkpoint(run_dir) if config.resume else None
    if checkpoint is not None:
        state.update(load_checkpoint(checkpoint, model, optimizer, parallel))
    state["micro_batches_per_step"] = group_size  # what a resume must keep (train.resume)
    scheduler = build_scheduler(optimizer, config, steps, start_step=state["step"])
    # Trackers (report_to) open last, once nothing before the loop can fail, and close with it.
    metrics = MetricsLog.for_run(run_dir, config, enabled=is_main)
    metrics.truncate_after(state["step"])  # a no-op where not enabled
    saved_step = state["step"] if checkpoint is not None else None
    checkpoints = _Checkpoints(run_dir, model, optimizer, state, config, parallel, saved_step)
    collapse = CollapseWatch(output_size(model))

    def validate() -> bool:
        """Run validation; return True when early stopping says stop."""
        if not data.val_batches:
            return False
        val_loss, val_metrics = evaluate(
            model, data.val_batches, device, compute_dtype, parallel, objective
        )
        state["last_eval_step"] = state["step"]
        metrics.write(
            {
                "step": state["step"],
                "val_loss": val_loss,
                **{f"val_{name}": value for name, value in val_metrics.items()},
            }
        )
        best = state["best_val_loss"]
        if best is None or val_loss < best:
            state["best_val_loss"], state["bad_evals"] = val_loss, 0
        else:
            state["bad_evals"] += 1
        patience = config.early_stopping_patience
        return bool(patience) and state["bad_evals"] >= patience

    bar = Progress(
        "train", steps, "step", initial=state["step"], enabled=config.progress and is_main
    )
    model.train()
    reset_peak_memory(device)  # the training's peak, not a transient of loading the weights
    stop_reason, last_loss, tokens, seconds = "completed", None, 0, 0.0
    start = time.perf_counter()
    batches, batches_epoch = None, None
    with StopSignals() as signals, contextlib.closing(bar), metrics:
        while state["step"] < steps:
            # A step boundary: every rank takes the same decision (one all-reduce).
            sigint, sigterm, clock_due = parallel.any_rank(
                [signals.received == SIGINT, signals.received == SIGTERM, checkpoints.clock_due()],
                device,
            )
            if sigint or sigterm:
                raise _interrupted(SIGINT if sigint else SIGTERM, checkpoints.save(), steps)
            if clock_due and not collapse.suspected:
                checkpoints.save()
            if batches_epoch != state["epoch"]:
                batches, batches_epoch = data.epoch_batches(state["epoch"]), state["epoch"]
            index = state["batch_index"]
            group = batches[index : index + group_size]
            tick = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            result = _train_step(
                model, group, params, config, device, compute_dtype, parallel, objective
            )
            loss, grad_norm = result.loss, result.grad_norm
            step = state["step"] + 1
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                parallel.barrier()
                raise TrainingDivergedError(
                    f"step {step}: loss {loss} / grad norm {grad_norm} is not finite; training "
                    f"stopped before updating the weights ({_kept(run_dir)}). Lower 'lr', keep "
                    "'max_grad_norm' > 0, or use dtype float32"
                )
            watched = objective.token_nll(loss, result.sums)  # the loss itself for sft
            if collapse.update(step, watched, grad_norm):
                # The first flat step ran on the weights checkpointed as its previous step.
                remove_checkpoints_from(run_dir, collapse.first_step - 1, parallel)
                raise TrainingDivergedError(collapse.message(step, watched, _kept(run_dir)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_tokens = sum(data.count_tokens(b) for b in group)
            step_seconds = time.perf_counter() - tick
            tokens, seconds, last_loss = tokens + step_tokens, seconds + step_seconds, loss
            state["step"] = step
            state["batch_index"] = index + len(group)
            epoch_done = state["batch_index"] >= len(batches)
            if epoch_done:
                state["epoch"], state["batch_index"] = state["epoch"] + 1, 0
            tokens_per_s = step_tokens / step_seconds if step_seconds > 0 else 0.0
            step_metrics = objective.metrics(result.sums, result.units)
            if step % config.log_every == 0 or step == steps:
                metrics.write(
                    {
                        "step": step,
                        "epoch": state["epoch"] if not epoch_done else state["epoch"] - 1,
                        "loss": loss,
                        **step_metrics,
                        "lr": lr,
                        "tokens": step_tokens,
                        "tokens_per_s": round(tokens_per_s, 2),
                        "grad_norm": grad_norm,
                        "peak_memory_bytes": peak_memory_bytes(device),
                        "elapsed_s": round(time.perf_counter() - start, 3),
                    }
                )
            shown = {PROGRESS_NAMES.get(k, k): f"{v:.3f}" for k, v in step_metrics.items()}
            bar.update(1, {"loss": f"{loss:.4f}", **shown, "tok_s": f"{tokens_per_s:.0f}"})
            due_eval = (config.eval_every and step % config.eval_every == 0) or (
                not config.eval_every and epoch_done
            )
            should_stop = validate() if due_eval else False
            if config.save_every and step % config.save_every == 0 and not collapse.suspected:
                checkpoints.save()
            if should_stop:
                stop_reason = "early_stopping"
                break
        if stop_reason == "completed" and state["last_eval_step"] != state["step"]:
            validate()  # the final model always gets a validation loss
        checkpoints.save()  # the end: a finished run can be extended from here
    return FitResult(
        steps=state["step"],
        stop_reason=stop_reason,
        final_loss=last_loss,
        best_val_loss=state["best_val_loss"],
        tokens=tokens,
        seconds=seconds,
        peak_memory_bytes=peak_memory_bytes(device),
    )


def _interrupted(number: int, checkpoint: Path, steps: int) -> TrainingInterrupted:
    step = int(checkpoint.name.removeprefix("step-"))
    run_dir = checkpoint.parent.parent
    return TrainingInterrupted(
        f"{Signals(number).name}: stopped after step {step} of {steps}; checkpoint {checkpoint} "
        f"written. Continue with the same settings and --resume (tuneforge train --config "
        f"{run_dir / 'config.yaml'} --resume)",
        number,
        step,
        checkpoint,
    )
