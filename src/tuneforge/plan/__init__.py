"""Plan a training run's memory before loading anything: ``tuneforge plan``.

Stable API (``tuneforge.train.planning.plan_for_run`` maps a training config onto it; the
training command prints that plan before it trains)::

    from tuneforge.plan import load_model_config, estimate_memory, count_parameters

    config = load_model_config("llama-7b")  # shipped name | path/config.json | model reference
    plan = estimate_memory(
        config,
        method="full",            # "full" | "lora" | "qlora"
        batch_size=1,             # rows per micro-batch per device
        max_length=512,           # tokens per row
        dtype="bfloat16",         # "bfloat16" (autocast) | "float32" | "auto" (bf16 on cuda)
        lora_r=8,                 # default: tuning_vocabulary.LORA_R, as in training
        target_modules=None,      # default: every linear of a block, never the output head
        gradient_checkpointing=False,
        optimizer="adamw",        # "adamw" | "adamw_8bit" | "paged_adamw_8bit"
        gpus=1,
        strategy="auto",          # "auto" | "none" | "ddp" | "fsdp" (auto: ddp when gpus > 1)
        supervised_fraction=1.0,  # share of positions carrying loss
        lm_head_on_supervised_only=True,
        # keyword-only extras with defaults: grad_accum=1, lora_dropout=0.0,
        # padding_mask=False, device="cuda" ("cpu" = what the CPU benchmark measures),
        # attention="sdpa"
    )
    plan.components   # {"weights": bytes, "gradients (fp32)": bytes, ...} per device
    plan.total        # predicted peak bytes per device
    plan.fits(parse_memory("80GB"))
    print(plan.table(parse_memory("80GB")))

    count_parameters(config, "lora", lora_r=8)  # -> ParameterCount(total, trainable, ..., percent)

The names (methods, optimizers, dtypes, strategies) and LoRA defaults come from
``tuneforge.tuning_vocabulary``, shared with ``tuneforge.train``. All sizes are bytes;
``gib()`` converts. The formulas and their validation: docs/plan.md.
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
