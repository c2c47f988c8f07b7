"""A whole training run: run directory, model, data, plan, ``fit``, final save, summary.

``train(config)`` is what ``tuneforge train`` and ``make demo`` call. The run directory holds
``config.yaml`` (resolved), ``inputs.json`` (SHA-256 of the data files), ``metrics.jsonl``,
``checkpoints/step-N/``, ``adapter/`` (lora, qlora; PEFT format) or ``model/`` (full;
safetensors + tokenizer) and ``summary.json``. A run with ``store`` also holds the RAFT examples
it trained on (``raft_data.jsonl`` and its ``raft_data.report.json``), and its adapter or model
folder the prompt record ``rag_prompt.json`` (``tuneforge.rag.raft``).

Everything a user can get wrong is checked before the run directory is touched: the options,
the run directory (not empty without ``--force``; ``--resume``: what may be continued, see
``tuneforge.train.resume``), the model reference and the data (read and tokenized). A start that
fails leaves the directory as it was, so the retry needs no ``--force``.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneforge.atomic import staged_dir, write_json, write_text
from tuneforge.errors import RunDirError
from tuneforge.train.config import TrainConfig, dump_config
from tuneforge.train.loop import FitResult, TrainingData, fit, total_steps
from tuneforge.train.metrics import check_trackers
from tuneforge.train.parallel import (
    Parallel,
    decoder_blocks,
    full_state_dict,
    init_parallel,
    wrap_model,
)
from tuneforge.train.parameters import count_parameters, parameter_summary
from tuneforge.train.resume import (
    INPUTS_FILE,
    ResumePoint,
    check_extension,
    check_resume,
    input_fingerprints,
)
from tuneforge.tuning_vocabulary import PREFERENCE_OBJECTIVES, resolve_reference


@dataclass
class RunResult:
    """A finished run.

    Attributes:
        run_dir: the run directory.
        summary: the content of ``summary.json``.
        output_dir: ``run_dir/adapter`` or ``run_dir/model``.
    """

    run_dir: Path
    summary: dict[str, Any]
    output_dir: Path


def check_run_dir(config: TrainConfig, parallel: Parallel | None = None) -> ResumePoint | None:
    """Check that the run directory may be used; change nothing.

    Every rank checks, so every rank raises alike.

    Returns:
        where a ``--resume`` continues (None for a new run).

    Raises:
        RunDirError: ``out`` is not empty (without force or resume), or it cannot be resumed
            as configured (see ``tuneforge.train.resume.check_resume``).
    """
    parallel = parallel or Parallel()
    out = Path(config.out)
    if config.resume:
        return check_resume(config, parallel.world_size)
    if out.exists() and any(out.iterdir()) and not config.force:
        raise RunDirError(
            f"{out}: the run directory is not empty; pass --force to overwrite it, "
            "--resume to continue it, or choose another --out"
        )
    return None


def prepare_run_dir(config: TrainConfig, resolved: TrainConfig, parallel: Parallel) -> Path:
    """Create the run directory (cleared first with ``force``) and record what the run uses.

    Called once every input has been checked. Rank 0 writes ``config.yaml`` (``resolved``) and,
    for a new run, ``inputs.json``; a resumed run drops the ``summary.json`` of its previous
    finish (it is running again).
    """
    out = Path(config.out)
    parallel.barrier()  # every rank has looked before rank 0 changes anything
    if parallel.is_main:
        if config.resume:
            (out / "summary.json").unlink(missing_ok=True)
        elif out.exists():
            shutil.rmtree(out)  # non-empty only with force (check_run_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", dump_config(resolved))
        if not (out / INPUTS_FILE).exists():
            write_json(out / INPUTS_FILE, input_fingerprints(config))
    parallel.barrier()
    return out


RAFT_DATA = "raft_data.jsonl"
"""The RAFT examples a run with ``store`` trains on, in its run directory (with a report)."""


def build_raft_examples_into(
    config: TrainConfig, folder: Path, log: Callable[[str], None]
) -> TrainConfig:
    """Build the RAFT examples of a run with ``store`` into ``folder``; the config reading them.

    The examples are built over the store from the question file ``data.path`` with the prompts
    ``rag ask`` builds (``tuneforge.rag.raft.build_raft_data``), before anything else loads, so
    a bad question line or a source missing from the store fails first. ``folder`` gets
    ``RAFT_DATA`` and its ``.report.json``.

    Returns:
        ``config`` with ``data`` reading the examples (``messages`` format).

    Raises:
        DataError: an invalid question file, a source the store lacks, or no example built.
        StoreError: ``store`` holds no store.
    """
    from tuneforge.rag.raft import build_raft_data

    path = folder / RAFT_DATA
    report = build_raft_data(config.data.path, config.store, path, config.raft)
    log(report.summary())
    return replace(config, data=replace(config.data, path=str(path), format="messages"))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Unpacked batches in bf16 on CPU are padded to a multiple of this many tokens. oneDNN makes
# (and keeps) kernels for every new matrix shape in bf16: with each batch as wide as its longest
# row, a run met a new shape at most steps and slowed by a fifth while its memory grew by about
# 8 MB a shape (bench/train_shapes.py); fp32 products (MKL) make none, and are not padded.
CPU_BF16_WIDTH_MULTIPLE = 64


def batch_width_multiple(config: TrainConfig, device: torch.device) -> int:
    """What unpacked batch widths are rounded up to for ``config`` on ``device``."""
    from tuneforge.train.methods import compute_dtype_for

    low_precision = compute_dtype_for(config, device) in (torch.bfloat16, torch.float16)
    return CPU_BF16_WIDTH_MULTIPLE if device.type == "cpu" and low_precision else 1


def build_training_data(
    config: TrainConfig, tokenizer, log: Callable[[str], None], width_multiple: int = 1
):
    """Read, tokenize and batch ``config.data`` with ``tuneforge.data``; return TrainingData.

    With ``val_data`` the validation examples come from that file, read with the same options,
    and ``data.val_fraction`` is ignored. A preference objective reads pairs and batches them
    in pair rows (``tuneforge.data.make_pair_batches``); validation pairs are numbered after
    the training ones (``pair_index``), so one table can hold their reference log-probs.
    """
    from tuneforge.data import (
        count_real_tokens,
        ensure_pad_token,
        make_batches,
        make_pair_batches,
        prepare_data,
    )

    kind = "preference" if config.objective in PREFERENCE_OBJECTIVES else "supervised"
    data = replace(config.data, val_fraction=0.0) if config.val_data else config.data
    prepared = prepare_data(data, tokenizer, kind=kind)
    log(prepared.report.summary())
    train_examples, val_examples = prepared.train, list(prepared.val)
    if config.val_data:
        val_path = replace(data, path=config.val_data)
        val_examples = prepare_data(val_path, tokenizer, kind=kind).train
    pad_id = ensure_pad_token(tokenizer)

    def batches(examples, epoch: int, shuffle: bool, offset: int = 0) -> list[dict]:
        if kind == "preference":
            return make_pair_batches(
                examples,
                batch_size=config.batch_size,
                pad_token_id=pad_id,
                seed=config.seed,
                epoch=epoch,
                shuffle=shuffle,
                index_offset=offset,
            )
        return make_batches(
            examples,
            batch_size=config.batch_size,
            max_length=config.data.max_length,
            packing=config.packing,
            pad_token_id=pad_id,
            seed=config.seed,
            epoch=epoch,
            shuffle=shuffle,
            width_multiple=width_multiple,
        )

    return TrainingData(
        epoch_batches=lambda epoch: batches(train_examples, epoch, True),
        val_batches=batches(val_examples, 0, False, len(train_examples)) if val_examples else [],
        count_tokens=count_real_tokens,
        supervised_fraction=prepared.report.supervised_share,
    )


def batches_to_train(config: TrainConfig, data: TrainingData, world_size: int) -> list:
    """The training batches a run will use, each once: the first epoch's, or only its first
    ``steps x grad_accum x processes`` when the run ends within it (what a precomputed
    reference needs to score; a longer run reads every pair)."""
    used = total_steps(config, data, world_size) * config.grad_accum * world_size
    return data.epoch_batches(0)[:used]


def memory_plan_text(
    config: TrainConfig,
    parallel: Parallel,
    device: torch.device,
    supervised_fraction: float,
    home: Path | None = None,
) -> str:
    """The plan of this run (``plan_for_run``) as a table, with a verdict on a CUDA device.

    Equal to ``tuneforge plan --config CONFIG --device cpu|cuda --gpus N --supervised-fraction F``;
    on CUDA the run adds the verdict against the device's memory. A model the planner does not
    support gives one line saying so instead of failing the run.
    """
    from tuneforge.errors import TuneforgeError
    from tuneforge.train.methods import bf16_supported
    from tuneforge.train.planning import plan_for_run

    try:
        plan = plan_for_run(
            config,
            device_type=device.type,
            world_size=parallel.world_size,
            bf16_supported=bf16_supported(device),
            supervised_fraction=supervised_fraction,
            home=home,
        )
    except TuneforgeError as err:
        return f"(memory plan unavailable: {err})"
    device_bytes = None
    if device.type == "cuda":
        device_bytes = torch.cuda.get_device_properties(device).total_memory
    return plan.table(device_bytes)


def save_final(
    config: TrainConfig,
    model,
    tokenizer,
    run_dir: Path,
    parallel: Parallel | None = None,
    identity=None,
) -> Path:
    """Save the adapter (PEFT format) or the full model (safetensors) with its tokenizer.

    Every rank calls it (a sharded model is gathered collectively); rank 0 writes.

    Args:
        identity: the base weights' identity for an adapter, computed before sharding.
    """
    parallel = parallel or Parallel()
    state_dict = full_state_dict(model)  # None unless sharded
    out = run_dir / ("adapter" if config.uses_lora else "model")
    if parallel.is_main:
        if config.uses_lora:
            from tuneforge.adapters import save_adapter

            save_adapter(model, out, tokenizer, identity=identity, state_dict=state_dict)
        else:
            with staged_dir(out, replace=True) as tmp:
                model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
                tokenizer.save_pretrained(tmp)
    parallel.barrier()
    return out


def train(
    config: TrainConfig, *, home: Path | None = None, log: Callable[[str], None] = print
) -> RunResult:
    """Run a full training run as configured.

    Args:
        config: the run's config (``out`` is the run directory).
        home: tuneforge cache root for model references (default ``$TUNEFORGE_HOME``).
        log: where the plan and the data report are printed.

    Returns:
        a RunResult.

    Raises:
        ConfigError: no data given, or a setting the launcher refuses.
        RunDirError: the run directory would be overwritten or cannot be resumed.
        TrainingDivergedError: the loss became NaN/inf or collapsed to the uniform distribution
            (the last good checkpoint is kept).
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after a checkpoint.
        DataError, ModelError: from the data or the model.
    """
    config.data.require_path()  # before the run directory is touched
    check_trackers(config.report_to)
    parallel, device = init_parallel(config.strategy, config.method, config.device)
    try:
        return _train(config, parallel, device, home, log)
    finally:
        parallel.shutdown()


def _train(
    config: TrainConfig,
    parallel: Parallel,
    device: torch.device,
    home: Path | None,
    log: Callable[[str], None],
) -> RunResult:
    from tuneforge.models.loading import load_tokenizer, resolve_folder
    from tuneforge.train.methods import prepare_model, read_starting_adapter
    from tuneforge.train.objectives import build_objective

    if not parallel.is_main:
        log = _quiet
    resume_point = check_run_dir(config, parallel)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    # The data first (read, validated, tokenized): its errors come before the model loads.
    with tempfile.TemporaryDirectory() as tmp:
        read_from = build_raft_examples_into(config, Path(tmp), log) if config.store else config
        tokenizer = load_tokenizer(
            resolve_folder(config.model, home=home, progress=config.progress)
        )
        data = build_training_data(read_from, tokenizer, log, batch_width_multiple(config, device))
        raft_files = {path.name: path.read_text("utf-8") for path in Path(tmp).iterdir()}
    if resume_point is not None:
        check_extension(resume_point, total_steps(config, data, parallel.world_size))
    adapter = read_starting_adapter(config)  # its shape is checked before the model loads
    prepared = prepare_model(config, device, home=home, tokenizer=tokenizer, adapter=adapter)
    counts = count_parameters(prepared.model)
    log(parameter_summary(counts, config.method))
    log(memory_plan_text(config, parallel, device, data.supervised_fraction, home))
    if parallel.distributed:
        log(
            f"strategy {parallel.strategy}: {parallel.world_size} processes, batch "
            f"{config.batch_size} per process x grad_accum {config.grad_accum} = global batch "
            f"{config.batch_size * config.grad_accum * parallel.world_size}"
        )
    identity = None
    if config.uses_lora:
        from tuneforge.adapters.identity import base_identity

        identity = base_identity(prepared.model)  # before sharding changes the tensors
    # Before compiling and sharding: a reference copies or scores the starting model.
    objective = build_objective(
        config,
        prepared.model,
        lambda: batches_to_train(config, data, parallel.world_size) + data.val_batches,
        device,
        prepared.compute_dtype,
        log,
    )
    if config.compile:
        compile_blocks(prepared.model)
    wrap_model(prepared.model, parallel, device, objective)
    resolved = replace(config, target_modules=prepared.target_modules, resume=False, force=False)
    run_dir = prepare_run_dir(config, resolved, parallel)
    if parallel.is_main:
        for name, contents in raft_files.items():
            write_text(run_dir / name, contents)
    # The same dropout stream whatever loading consumed; each rank its own.
    seed_everything(config.seed + parallel.rank)
    started = time.time()
    result: FitResult = fit(
        prepared.model,
        data,
        config,
        run_dir,
        device=device,
        compute_dtype=prepared.compute_dtype,
        parallel=parallel,
        objective=objective,
    )
    output_dir = save_final(
        config, prepared.model, prepared.tokenizer, run_dir, parallel, identity=identity
    )
    if config.store and parallel.is_main:
        from tuneforge.rag.raft import write_prompt_record

        write_prompt_record(output_dir, config.raft, config.store)
    summary = {
        "method": config.method,
        "objective": config.objective,
        "model": config.model,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "final_loss": result.final_loss,
        "best_val_loss": result.best_val_loss,
        "tokens": result.tokens,
        "train_seconds": round(result.seconds, 3),
        "tokens_per_s": round(result.tokens_per_second, 2),
        "peak_memory_bytes": result.peak_memory_bytes,
        "wall_seconds": round(time.time() - started, 3),
        "total_parameters": counts.total,
        "trainable_parameters": counts.trainable,
        "trainable_percent": counts.trainable_percent,
        "weight_bytes": counts.weight_bytes,
        "compute_dtype": str(prepared.compute_dtype).removeprefix("torch."),
        "output": output_dir.name,
    }
    reference = resolve_reference(
        config.reference, config.objective, config.method, config.init_adapter is not None
    )
    if reference is not None:
        summary["reference"] = reference
    if parallel.distributed:
        summary["strategy"] = parallel.strategy
        summary["processes"] = parallel.world_size
    if parallel.is_main:
        write_json(run_dir / "summary.json", summary)
    return RunResult(run_dir=run_dir, summary=summary, output_dir=output_dir)


def compile_blocks(model) -> None:
    """``torch.compile`` every transformer block in place (parameter names do not change).

    Per-block ("regional") compilation compiles one block's graph and reuses it for the others,
    so compile time does not grow with depth; ``dynamic=True`` keeps one graph for every
    sequence length instead of recompiling per batch shape.
    """
    for block in decoder_blocks(model):
        block.compile(dynamic=True)


def _quiet(_message: str) -> None:
    """The log of ranks other than 0."""
