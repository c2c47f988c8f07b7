"""Plan a training run's memory before loading anything: ``tuneforge plan``.

Stable API (the training command prints ``estimate_memory(...).table()`` before it trains)::

    from tuneforge.plan import load_model_config, estimate_memory, count_parameters

    config = load_model_config("llama-7b")  # shipped name | path/config.json | model reference
    plan = estimate_memory(
        config,
        method="full",            # "full" | "lora" | "qlora"
        batch_size=1,             # rows per micro-batch per device
        max_length=512,           # tokens per row
        dtype="bfloat16",         # "bfloat16" (autocast) | "float32"
        lora_r=16,
        target_modules=None,      # default: every linear of a block, never the output head
        gradient_checkpointing=False,
        optimizer="adamw",        # "adamw" | "adamw8bit" | "paged_adamw8bit"
        gpus=1,
        strategy="single",        # "single" | "ddp" | "fsdp"
        supervised_fraction=1.0,  # share of positions carrying loss
        lm_head_on_supervised_only=True,
        # keyword-only extras with defaults: grad_accum=1, lora_dropout=0.0,
        # padding_mask=False, device="cuda" ("cpu" = what the CPU benchmark measures)
    )
    plan.components   # {"weights": bytes, "gradients (fp32)": bytes, ...} per device
    plan.total        # predicted peak bytes per device
    plan.fits(parse_memory("80GB"))
    print(plan.table(parse_memory("80GB")))

    count_parameters(config, "lora", lora_r=8)  # -> ParameterCount(total, trainable, ..., percent)

All sizes are bytes; ``gib()`` converts. The formulas and their validation: docs/plan.md.
"""

from tuneforge.plan.config import ModelConfig, load_model_config, shipped_config_names
from tuneforge.plan.memory import MemoryPlan, estimate_memory, gib, parse_memory
from tuneforge.plan.parameters import (
    ParameterCount,
    count_parameters,
    lora_parameter_count,
    percent_fewer,
)

__all__ = [
    "MemoryPlan",
    "ModelConfig",
    "ParameterCount",
    "count_parameters",
    "estimate_memory",
    "gib",
    "load_model_config",
    "lora_parameter_count",
    "parse_memory",
    "percent_fewer",
    "shipped_config_names",
]
