"""The memory plan of a training run: one function for ``tuneforge train`` and ``tuneforge plan``.

``plan_for_run`` turns a ``TrainConfig`` and where it runs (device type, processes) into the
planner's settings the way the run itself resolves them: ``dtype: auto``, ``strategy: auto``,
the attention kernel, padding or packing. ``train`` prints its result before the first step, and
``tuneforge plan`` prints the same table for the same config, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from tuneforge.plan import MemoryPlan, estimate_memory, load_model_config
from tuneforge.train.config import TrainConfig
from tuneforge.train.methods import EAGER_ATTENTION_MAX_TOKENS, attention_implementation
from tuneforge.train.methods import bf16_supported as device_computes_bf16
from tuneforge.tuning_vocabulary import (
    resolve_dtype,
    resolve_reference,
    resolve_strategy,
    row_tokens,
)


def planned_device_type(device: str) -> str:
    """The device type a plan is made for: ``cpu`` for ``cpu``; otherwise ``cuda``.

    ``auto`` plans a GPU: the planner answers "will this fit on the GPU I am going to use", so
    it does not look at the machine it runs on (a run resolves ``auto`` itself and passes the
    device it got).
    """
    return "cpu" if device == "cpu" else "cuda"


def plan_for_run(
    config: TrainConfig,
    *,
    device_type: str,
    world_size: int = 1,
    bf16_supported: bool | None = None,
    supervised_fraction: float = 1.0,
    home: Path | None = None,
) -> MemoryPlan:
    """Predict the peak memory of one device of the run ``config`` describes.

    Args:
        config: the training config (model, method, objective and reference, batch,
            data.max_length, LoRA, dtype, ...).
        device_type: ``cpu`` or ``cuda``: where each process computes.
        world_size: processes (one device each); ``config.strategy`` is resolved for it.
        bf16_supported: whether the device computes bf16 natively (what ``dtype: auto``
            depends on). None: a plan assumes a bf16-capable GPU, and for ``cpu`` asks this
            machine's CPU (``models.device.native_bf16``), as a run on it does.
        supervised_fraction: share of tokens that carry loss (the run measures it on its data;
            1.0 is the upper bound).
        home: tuneforge cache root for model references.

    Returns:
        the MemoryPlan (bytes per device by component).

    Raises:
        ConfigError: the model config is unsupported by the planner, or a setting is invalid.
        ModelError: a model reference that cannot be resolved.
    """
    if bf16_supported is None:
        bf16_supported = device_type == "cuda" or device_computes_bf16(torch.device("cpu"))
    compute_dtype = resolve_dtype(config.dtype, bf16_supported)
    max_length = config.data.max_length
    rows = row_tokens(config.objective, max_length)
    settings = dict(
        method=config.method,
        batch_size=config.batch_size,
        dtype=compute_dtype,
        lora_r=config.lora_r,
        target_modules=config.target_modules,
        gradient_checkpointing=config.gradient_checkpointing,
        optimizer=config.optimizer,
        gpus=world_size,
        strategy=resolve_strategy(config.strategy, world_size),
        supervised_fraction=supervised_fraction,
        lm_head_on_supervised_only=True,  # train.loss applies the head to supervised rows only
        grad_accum=config.grad_accum,
        lora_dropout=config.lora_dropout,
        padding_mask=not config.packing,
        device=device_type,
        objective=config.objective,
        reference=resolve_reference(
            config.reference, config.objective, config.method, config.init_adapter is not None
        )
        or "auto",
    )
    model_config = load_model_config(config.model, home=home)
    plan = estimate_memory(
        model_config,
        max_length=max_length,
        attention=attention_implementation(device_type, compute_dtype, rows),
        **settings,
    )
    eager = attention_implementation(device_type, compute_dtype, EAGER_ATTENTION_MAX_TOKENS)
    if config.packing or rows <= EAGER_ATTENTION_MAX_TOKENS or eager != "eager":
        return plan
    # Unpacked batches narrower than the rows may run with eager attention
    # (train.methods.match_attention_to_batch), whose probabilities can outweigh sdpa's
    # savings at full width: the plan is the larger of the two peaks.
    narrow = estimate_memory(
        model_config,
        max_length=max_length * EAGER_ATTENTION_MAX_TOKENS // rows,
        attention="eager",
        **settings,
    )
    peak = narrow if narrow.total > plan.total else plan
    width = EAGER_ATTENTION_MAX_TOKENS if peak is narrow else rows
    return replace(
        peak,
        settings={
            **plan.settings,
            "attention": f"eager up to {EAGER_ATTENTION_MAX_TOKENS} tokens wide, sdpa above",
        },
        notes=[*peak.notes, f"peak at batches {width} tokens wide"],
    )
