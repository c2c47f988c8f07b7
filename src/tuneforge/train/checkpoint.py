"""Atomic checkpoints that let ``--resume`` continue a run exactly.

A checkpoint is a folder ``checkpoints/step-N/`` holding:

- ``trainable.safetensors``: every trainable parameter by name (the adapters for lora/qlora,
  the whole model for full);
- ``optimizer.pt``: its state dict (the learning-rate schedule needs none: it is a function of
  the step and the run's total steps, rebuilt on resume; see ``loop.build_scheduler``);
- ``rng.pt``: python, numpy, torch and CUDA generator states (``rng-rank<r>.pt`` for the other
  ranks of a multi-process run);
- ``state.json``: the step, the data position (epoch, next batch index), the micro-batches per
  optimizer step (``grad_accum x processes``) and loop state.

It is written under a temporary name and renamed into place, so a SIGKILL leaves either the
complete new checkpoint or none; older checkpoints are pruned only after the new one exists.
Parameters are saved whole, and under FSDP the optimizer state is saved whole and keyed by
parameter name, so a checkpoint resumes with any process count (see ``tuneforge.train.parallel``).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tuneforge.atomic import staged_dir
from tuneforge.errors import RunDirError
from tuneforge.train import parallel as par

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "state.json").exists()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def rng_states() -> dict[str, Any]:
    """Every random generator the loop draws from."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back the states saved by ``rng_states``."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int = 2,
    parallel: par.Parallel | None = None,
) -> Path:
    """Write ``checkpoints/step-<step>`` atomically, then prune all but the newest ``keep``.

    In a multi-process run every rank calls this (gathering sharded tensors is collective);
    rank 0 writes the folder, the other ranks add their RNG state to it.

    Args:
        state: JSON-ready loop state; must include ``step``, ``epoch`` and ``batch_index`` (the
            index of the next micro-batch to run in that epoch).

    Returns:
        the checkpoint folder.
    """
    from safetensors.torch import save_file

    parallel = parallel or par.Parallel()
    final = Path(run_dir) / "checkpoints" / f"step-{step}"
    if parallel.strategy == "fsdp":  # gathering the shards is collective: every rank joins
        tensors = par.trainable_state(model)
        optim_state = par.optimizer_state(model, optimizer)
    elif parallel.is_main:  # replicas: rank 0's copy is the state
        tensors = par.trainable_state(model)
        optim_state = optimizer.state_dict()
    if parallel.is_main:
        with staged_dir(final, replace=True) as tmp:
            save_file(tensors, str(tmp / "trainable.safetensors"))
            torch.save(optim_state, tmp / "optimizer.pt")
            torch.save(rng_states(), tmp / "rng.pt")
            (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    parallel.barrier()
    if not parallel.is_main:
        torch.save(rng_states(), final / _rng_file(parallel.rank))
    parallel.barrier()
    if parallel.is_main:
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _by_name(optim_state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Re-key a plain ``optimizer.state_dict()`` (by position) by parameter name."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    return {
        "state": {names[index]: value for index, value in optim_state["state"].items()},
        "param_groups": [
            {**group, "params": [names[index] for index in group["params"]]}
            for group in optim_state["param_groups"]
        ],
    }


def read_state(folder: Path) -> dict[str, Any]:
    """The loop state (``state.json``) of a checkpoint folder."""
    return json.loads((Path(folder) / "state.json").read_text(encoding="utf-8"))


def remove_checkpoints_from(run_dir: Path, step: int, parallel: par.Parallel | None = None) -> None:
    """Delete the checkpoints of ``step`` and later (weights known to be bad); rank 0 deletes."""
    parallel = parallel or par.Parallel()
    if parallel.is_main:
        for folder in checkpoint_dirs(run_dir):
            if int(_STEP_DIR.match(folder.name).group(1)) >= step:
                shutil.rmtree(folder)
    parallel.barrier()


def load_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    parallel: par.Parallel | None = None,
) -> dict[str, Any]:
    """Restore model, optimizer and RNG states from a checkpoint; return its loop state.

    Works whatever process count and strategy wrote the checkpoint.

    Raises:
        RunDirError: the checkpoint does not fit the model (another method or model).
    """
    from safetensors.torch import load_file

    parallel = parallel or par.Parallel()
    folder = Path(folder)
    saved = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    expected = {name for name, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        raise RunDirError(
            f"{folder}: this checkpoint holds other trainable parameters than the model being "
            "resumed (was the method, model or LoRA config changed?); resume with the run's "
            "config.yaml or start a new run with --force"
        )
    par.load_trainable_state(model, saved)
    device = next(iter(params.values())).device
    optim_state = torch.load(folder / "optimizer.pt", map_location=device)
    keyed_by_name = any(isinstance(key, str) for key in optim_state["state"])
    if parallel.strategy == "fsdp" or keyed_by_name:
        if not keyed_by_name:
            optim_state = _by_name(optim_state, model)
        par.load_optimizer_state(model, optimizer, optim_state)
    else:
        optimizer.load_state_dict(optim_state)
    rng_file = folder / _rng_file(parallel.rank)
    if not rng_file.exists():  # resumed with more processes than wrote the checkpoint
        rng_file = folder / "rng.pt"
    # Our own file: numpy's state is a tuple of arrays, which the weights-only loader refuses.
    restore_rng_states(torch.load(rng_file, weights_only=False))
    return read_state(folder)
