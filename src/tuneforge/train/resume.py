"""What ``--resume`` continues: the run that was started, on the same data, with the settings
that decide its batches and its updates unchanged.

A run directory records what it was started with: ``config.yaml`` (the resolved config) and
``inputs.json`` (the SHA-256 of the data, validation data and template files, so a file edited
in place is noticed). A resume compares the config it is given with them, before anything loads:

- **must stay equal** (``EXACT_FIELDS``, every data option): the model, the method, the
  objective (with its beta, reference and starting adapter) and LoRA shape, the data (path and
  content), batch size, packing, the optimizer and its settings, the learning rate and its
  schedule, the dtype and the seed, the RAFT store and settings (the examples are rebuilt from
  them); and the micro-batches per optimizer
  step, ``grad_accum x processes`` (so a run may resume on another number of processes with
  ``grad_accum`` adjusted). A change is refused, naming each changed field.
- **may change**: how often to validate, log and checkpoint, early-stopping patience, threads,
  device, strategy, compile, gradient checkpointing, the progress bar.
- **may grow**: ``max_steps`` or ``epochs``. The run then continues from its newest checkpoint
  on the schedule of the new total (``loop.build_scheduler``); an unfinished run may also be
  planned shorter, down to its checkpoint's step. A run that already reached its
  planned steps is *finished*: resuming it without raising them is refused with the way to
  extend it, instead of re-running from an older checkpoint and overwriting its output.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tuneforge.data.config import DataConfig
from tuneforge.errors import ConfigError, RunDirError
from tuneforge.train.checkpoint import latest_checkpoint, read_state
from tuneforge.train.config import TrainConfig, load_config

INPUTS_FILE = "inputs.json"

EXACT_FIELDS = (
    "model",
    "method",
    "objective",
    "beta",
    "reference",
    "init_adapter",
    "val_data",
    "store",
    "raft",
    "lr",
    "batch_size",
    "packing",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "use_rslora",
    "use_dora",
    "dtype",
    "optimizer",
    "weight_decay",
    "max_grad_norm",
    "schedule",
    "warmup_ratio",
    "seed",
)
"""TrainConfig fields a resumed run must keep (besides every data option and grad_accum)."""

EXACT_DATA_FIELDS = tuple(f.name for f in fields(DataConfig) if f.name != "seed")


@dataclass
class ResumePoint:
    """Where a resumed run continues.

    Attributes:
        run_dir: the run directory.
        checkpoint: its newest complete checkpoint.
        step: the optimizer steps that checkpoint holds.
        summary: ``summary.json`` of a run that finished, else None.
    """

    run_dir: Path
    checkpoint: Path
    step: int
    summary: dict[str, Any] | None


def data_sha256(path: str) -> str | None:
    """SHA-256 of a data file, or of a folder's data files (names and contents, sorted).

    Returns None for what is not local (a hub data set name) or does not exist.
    """
    from tuneforge.data.readers import data_files

    local = Path(path).expanduser()
    if local.is_file():
        return _file_sha256(local)
    if not local.is_dir():
        return None
    digest = hashlib.sha256()
    for file in data_files(local):  # the files the data reader reads from the folder
        digest.update(f"{file.relative_to(local)}\0{_file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_fingerprints(config: TrainConfig) -> dict[str, dict[str, str | None]]:
    """What ``inputs.json`` records: path and SHA-256 of the data, val_data and template_file."""
    paths = {
        "data": config.data.path,
        "val_data": config.val_data,
        "template_file": config.data.template_file,
    }
    return {
        name: {"path": path, "sha256": data_sha256(path)} for name, path in paths.items() if path
    }


def check_resume(config: TrainConfig, world_size: int) -> ResumePoint:
    """Check that ``config`` may resume the run in ``config.out``; read nothing heavy.

    Args:
        config: the config given to the resumed run.
        world_size: the processes of the resumed run.

    Returns:
        the ResumePoint.

    Raises:
        RunDirError: no checkpoint, an unreadable config.yaml, a changed setting (each named),
            or data whose content changed since the run started.
    """
    run_dir = Path(config.out)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise RunDirError(
            f"{run_dir}: no checkpoint to resume from (checkpoints/step-N/); run without --resume"
        )
    saved_path = run_dir / "config.yaml"
    try:
        saved = load_config(saved_path)
    except ConfigError as err:
        raise RunDirError(f"cannot resume {run_dir}: {err}") from err
    state = read_state(checkpoint)
    changed = _changed_fields(saved, config, saved_path)
    per_step = config.grad_accum * world_size
    saved_per_step = state.get("micro_batches_per_step", saved.grad_accum)
    if saved_per_step != per_step:
        changed.append(
            f"'grad_accum' x processes is {saved_per_step} micro-batches per step in {saved_path} "
            f"and its checkpoint but {config.grad_accum} x {world_size} = {per_step} now"
        )
    if changed:
        raise RunDirError(
            f"cannot resume {run_dir}: {'; '.join(changed)}. A resumed run keeps the settings "
            f"that decide its batches and its updates: resume with them (tuneforge train "
            f"--config {saved_path} --resume, raising --max-steps or --epochs to train longer), "
            "or start a new run (another --out, or --force)"
        )
    _check_inputs(run_dir, config)
    summary_path = run_dir / "summary.json"
    summary = (
        json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else None
    )
    return ResumePoint(run_dir, checkpoint, int(state["step"]), summary)


def check_extension(point: ResumePoint, total_steps: int) -> None:
    """Refuse a resume that has no step left to train, or would re-train a finished run.

    Args:
        point: from ``check_resume``.
        total_steps: the optimizer steps the resumed config plans.

    Raises:
        RunDirError: the run is finished and ``max_steps``/``epochs`` were not raised, it stopped
            early, it finished before runs checkpointed at their end, or the plan is shorter
            than the checkpoint.
    """
    run_dir, summary = point.run_dir, point.summary
    if summary is not None:
        done = int(summary["steps"])
        if summary.get("stop_reason") == "early_stopping":
            raise RunDirError(
                f"{run_dir} is finished: early stopping ended it at step {done} (no validation "
                "improvement); resuming would stop again at the next validation. Start a new run "
                "(another --out, or --force) with other settings"
            )
        if point.step < done:
            raise RunDirError(
                f"{run_dir} is finished ({done} steps) but its newest checkpoint is step "
                f"{point.step}: resuming would train again from there and overwrite its output. "
                "Start a new run to train longer (another --out, or --force)"
            )
        if total_steps <= done:
            raise RunDirError(
                f"{run_dir} is finished ({done} steps, {run_dir / 'summary.json'}); to train it "
                f"further, resume with --max-steps above {done} (or more --epochs)"
            )
    if total_steps < point.step:
        raise RunDirError(
            f"cannot resume {run_dir}: its checkpoint is at step {point.step}, beyond the "
            f"{total_steps} steps now planned; pass --max-steps {point.step} or more"
        )


def _changed_fields(saved: TrainConfig, given: TrainConfig, saved_path: Path) -> list[str]:
    """One line per exactness field whose value differs between ``saved`` and ``given``."""
    pairs = [(name, getattr(saved, name), getattr(given, name)) for name in EXACT_FIELDS]
    pairs += [
        (f"data.{name}", getattr(saved.data, name), getattr(given.data, name))
        for name in EXACT_DATA_FIELDS
    ]
    changed = []
    for name, before, now in pairs:
        if name == "target_modules" and now is None:
            continue  # not given: the model's defaults, as the saved list was resolved
        if name in (
            "model",
            "init_adapter",
            "data.path",
            "val_data",
            "data.template_file",
            "store",
        ):
            same = _same_path(before, now)
        elif name == "target_modules":
            same = set(before or ()) == set(now)  # peft adapts the same layers in any order
        else:
            same = before == now
        if not same:
            changed.append(f"'{name}' is {before!r} in {saved_path} but {now!r} now")
    return changed


def _same_path(before: str | None, now: str | None) -> bool:
    """Equal references, or two spellings of one existing path (``runs/x``, ``./runs/x``)."""
    if before == now:
        return True
    if before is None or now is None:
        return False
    old, new = Path(before).expanduser(), Path(now).expanduser()
    return old.exists() and new.exists() and old.resolve() == new.resolve()


def _check_inputs(run_dir: Path, config: TrainConfig) -> None:
    """Compare the data files' SHA-256 with ``inputs.json`` (runs without it: nothing to check)."""
    path = run_dir / INPUTS_FILE
    if not path.exists():
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))
    for name, now in input_fingerprints(config).items():
        before = recorded.get(name, {}).get("sha256")
        if before is not None and now["sha256"] is not None and before != now["sha256"]:
            raise RunDirError(
                f"{now['path']}: the data changed since the run started (sha256 {before[:12]} "
                f"then, {now['sha256'][:12]} now, see {path}); resuming on other data would not "
                "continue the run that was started. Restore the file, or start a new run "
                "(another --out, or --force)"
            )
