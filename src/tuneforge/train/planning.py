"""The memory plan of a training run: one function for ``tuneforge train`` and ``tuneforge plan``.

``plan_for_run`` turns a ``TrainConfig`` and where it runs (device type, processes) into the
planner's settings the way the run itself resolves them: ``dtype: auto``, ``strategy: auto``,
the attention kernel, padding or packing. ``train`` prints its result before the first step, and
``tuneforge plan`` prints the same table for the same config, so the two never disagree.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tuneforge.plan import MemoryPlan, estimate_memory, load_model_config
from tuneforge.train.config import TrainConfig
from tuneforge.train.methods import attention_implementation
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
    return estimate_memory(
        load_model_config(config.model, home=home),
        method=config.method,
        batch_size=config.batch_size,
        max_length=max_length,
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
        attention=attention_implementation(
            device_type, compute_dtype, row_tokens(config.objective, max_length)
        ),
        objective=config.objective,
        reference=resolve_reference(
            config.reference, config.objective, config.method, config.init_adapter is not None
        )
        or "auto",
    )
