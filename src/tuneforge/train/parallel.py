"""Training across processes: ``torchrun`` launches, DDP and FSDP2 (``fully_shard``).

``tuneforge train`` runs unchanged under ``torchrun --nproc-per-node N``: every rank reads the
same data and builds the same micro-batches (deterministic per epoch); an optimizer step takes
``grad_accum x world_size`` consecutive micro-batches and rank r runs every world_size-th one of
them. The loss of each micro-batch is divided by the supervised tokens of the whole step (known
on every rank without communication), so a 2-process step computes exactly the loss and
gradient of a 1-process step with twice the accumulation. Only rank 0 logs and writes files.

Strategies:

- ``none``: one process.
- ``ddp``: every rank holds the whole model; gradients are all-reduced (``gloo`` on CPU,
  ``nccl`` on CUDA) by torch's DistributedDataParallel.
- ``fsdp``: FSDP2 ``fully_shard`` on every transformer block and on the root, so parameters,
  gradients and AdamW states are sharded across ranks. Full and LoRA methods.

Checkpoints hold full (unsharded) tensors and a full optimizer state keyed by parameter name, so
a run resumes with the same or another number of processes, under any strategy.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from tuneforge import tuning_vocabulary
from tuneforge.errors import ConfigError


class LossModule(nn.Module):
    """Wraps a causal LM so that ``forward(batch)`` returns the objective's loss parts.

    DDP and FSDP hook the forward of the module they wrap; the loss computes the decoder body and
    the output head separately (see ``tuneforge.train.loss``), and a DPO reference forward runs
    beside the policy's, so the wrapper's forward is the one call that goes through those hooks.
    The objective is a plain attribute, not a submodule: a frozen reference copy it may hold is
    neither synchronised nor sharded.
    """

    def __init__(self, model: nn.Module, objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return self.objective.loss_parts(self.model, batch)


def launched_world_size() -> int:
    """The process count ``torchrun`` (or ``accelerate launch``) set up; 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_strategy(strategy: str, method: str, world_size: int) -> str:
    """The strategy a run uses: ``auto`` is ``ddp`` when launched on several processes.

    The naming rule is ``tuning_vocabulary.resolve_strategy``, which the planner follows too;
    training adds what its launcher and its sharding need.

    Raises:
        ConfigError: none with several processes, ddp/fsdp without a launcher, fsdp with qlora.
    """
    chosen = tuning_vocabulary.resolve_strategy(strategy, world_size)
    if strategy == "auto":
        return chosen
    if strategy in ("ddp", "fsdp") and "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            f"train config field 'strategy' is '{strategy}', which needs a launcher: run "
            f"'torchrun --nproc-per-node N -m tuneforge train ... --strategy {strategy}'"
        )
    if strategy == "fsdp" and method == "qlora":
        raise ConfigError(
            "train config field 'strategy' is 'fsdp', which does not shard 4-bit (qlora) "
            "weights; use strategy ddp for qlora, or method lora/full with fsdp"
        )
    return chosen


@dataclass
class Parallel:
    """This process's place in a run.

    Attributes:
        strategy: ``none``, ``ddp`` or ``fsdp``.
        rank, world_size, local_rank: from the launcher (0, 1, 0 for one process).
        module: what computes a micro-batch's loss parts (the DDP/FSDP-wrapped LossModule).
    """

    strategy: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    module: nn.Module | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is in use."""
        return self.strategy in ("ddp", "fsdp")

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.distributed:
            torch.distributed.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum numbers over the ranks (identity in one process)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def any_rank(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Each flag, true when it is true on any rank: one decision every rank agrees on
        (a signal one rank received, a clock one rank read). Identity in one process."""
        return [total > 0 for total in self.sum([float(flag) for flag in flags], device)]

    def no_sync(self, last: bool):
        """DDP: skip the gradient all-reduce on every micro-batch of a step but the last."""
        if self.strategy == "ddp" and not last:
            return self.module.no_sync()
        return contextlib.nullcontext()

    def reshard(self) -> None:
        """FSDP: shard again the parameters a forward left gathered (no-op otherwise).

        FSDP2 keeps the root module's parameters gathered after its forward, for the backward
        that usually follows. After validation no backward follows: the parameters would stay
        gathered, and reading the optimizer state (a checkpoint) then fails, since it is keyed
        by the sharded parameters.
        """
        if self.strategy == "fsdp":
            self.module.reshard()

    def shutdown(self) -> None:
        """Leave the process group."""
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_parallel(strategy: str, method: str, device_name: str) -> tuple[Parallel, torch.device]:
    """Join the process group of a launched run and pick this rank's device.

    Args:
        strategy: the config's strategy (``auto``, ``none``, ``ddp``, ``fsdp``).
        method: the training method (fsdp does not shard qlora's 4-bit weights).
        device_name: the config's device (``auto``, ``cpu``, ``cuda``); under a launcher, CUDA
            ranks use ``cuda:LOCAL_RANK``.

    Returns:
        (Parallel, device).
    """
    from tuneforge.models.device import resolve_device

    world_size = launched_world_size()
    chosen = resolve_strategy(strategy, method, world_size)
    device = resolve_device(device_name)
    if chosen == "none":
        return Parallel(), device
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=timedelta(minutes=30))
    return Parallel(chosen, rank, world_size, local_rank), device


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a causal LM (peft-wrapped or not), for per-block sharding."""
    from tuneforge.train.loss import causal_lm_parts

    decoder, _ = causal_lm_parts(model)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ConfigError(
            f"cannot find the transformer blocks of {type(decoder).__name__} (expected a decoder "
            "with .layers), which strategy fsdp and compile work on; use strategy ddp and no "
            "compile for this model"
        )
    return list(layers)


def wrap_model(model: nn.Module, parallel: Parallel, device: torch.device, objective) -> nn.Module:
    """Wrap ``model`` for the strategy; set and return ``parallel.module`` (the loss module).

    The original ``model`` object stays the one to save: its parameter names do not change.

    Args:
        objective: what the loss module computes (``tuneforge.train.objectives``).
    """
    module = LossModule(model, objective)
    if parallel.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        module = DistributedDataParallel(module, device_ids=device_ids)
    elif parallel.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in decoder_blocks(model):
            fully_shard(block)
        fully_shard(module)  # the root: embeddings, final norm and the output head
    parallel.module = module
    return module


def _is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) parameter gathered whole; a plain tensor as is. Collective."""
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name as whole CPU tensors (collective under fsdp: every rank)."""
    return {
        name: full_tensor(param.detach()).to("cpu", copy=True).contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


@torch.no_grad()
def load_trainable_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into the model's (possibly sharded) parameters."""
    from torch.distributed.tensor import distribute_tensor

    params = dict(model.named_parameters())
    for name, tensor in saved.items():
        param = params[name]
        if _is_dtensor(param):
            source = distribute_tensor(
                tensor.to(param.device_mesh.device_type), param.device_mesh, param.placements
            )
            param.copy_(source)
        else:
            param.copy_(tensor)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's state dict on CPU for saving (collective: call on every rank).

    Returns None when the model is not sharded (save it directly).
    """
    if not any(_is_dtensor(p) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    # Tied weights (e.g. the output head sharing the embedding) are saved once, as unsharded.
    unique = {name for name, _ in model.named_parameters()}
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - unique
    return {name: tensor for name, tensor in state.items() if name not in tied}


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, whole tensors (collective under fsdp)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a state saved by ``optimizer_state`` (any process count, any strategy)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)
