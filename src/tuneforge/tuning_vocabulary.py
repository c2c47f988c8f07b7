"""The words and defaults of a fine-tuning run, shared by training and memory planning.

``tuneforge.train`` (what a run does) and ``tuneforge.plan`` (what it will cost) both import this
module; plan never imports train. A name here is spelled the same in YAML, on the command line,
in ``tuneforge plan`` and in the Python API, and the LoRA defaults are peft's terms (``r``,
``lora_alpha``, ``lora_dropout``).
"""

from __future__ import annotations

from tuneforge.errors import ConfigError

METHODS = ("full", "lora", "qlora")
"""``full``: every weight trains; ``lora``: frozen base + LoRA adapters; ``qlora``: frozen NF4
4-bit base + LoRA adapters."""

LORA_METHODS = ("lora", "qlora")
"""The methods that train LoRA adapters on a frozen base."""

OBJECTIVES = ("sft", "dpo", "orpo")
"""What a run optimises, whatever its method (which weights train): ``sft``, the next-token loss
on supervised tokens; ``dpo``, Direct Preference Optimization (Rafailov et al. 2023) on
preference pairs against a reference model; ``orpo``, Odds Ratio Preference Optimization (Hong
et al. 2024) on preference pairs, no reference. A separate axis from ``method``, as
LLaMA-Factory's ``stage`` and ``finetuning_type``: ``objective: dpo`` + ``method: lora``."""

PREFERENCE_OBJECTIVES = ("dpo", "orpo")
"""The objectives that read preference pairs (prompt, chosen, rejected)."""

REFERENCES = ("auto", "base", "copy", "precomputed")
"""DPO's reference model: ``base``, the frozen base with the adapter disabled (lora/qlora; no
extra weights); ``copy``, a frozen copy of the starting model (full; its weights in memory);
``precomputed``, the starting model's log-probs of the pairs the run uses, computed once before
training (any method; no extra weights, one no-grad pass over those pairs); ``auto``, see
``resolve_reference``."""

BETA = 0.1
"""Default ``beta``: DPO's KL strength, ORPO's odds-ratio weight (TRL's default for both)."""

OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")
"""AdamW with fp32 moments, or bitsandbytes' blockwise 8-bit AdamW (paged: spills to host)."""

DTYPES = ("auto", "float32", "bfloat16")
"""Compute dtypes; ``auto`` is resolved by ``resolve_dtype``."""

STRATEGIES = ("auto", "none", "ddp", "fsdp")
"""How processes share a run; ``auto`` is resolved by ``resolve_strategy``."""

DEVICE_TYPES = ("cpu", "cuda")
"""Device kinds the planner models (a CUDA device adds its context and foreach temporaries)."""

LORA_R = 8
"""Default LoRA rank."""
LORA_ALPHA = 16.0
"""Default LoRA scaling numerator (scaling = lora_alpha / r)."""
LORA_DROPOUT = 0.0
"""Default dropout on the LoRA input."""

NAMES_IN_OTHER_TOOLS = {
    # transformers TrainingArguments and TRL SFTConfig
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs",
    "output_dir": "out",
    "model_name_or_path": "model",
    "max_seq_length": "max_length",
    "lr_scheduler_type": "schedule",
    "optim": "optimizer",
    "save_steps": "save_every",
    "eval_steps": "eval_every",
    "logging_steps": "log_every",
    "save_total_limit": "keep_checkpoints",
    "resume_from_checkpoint": "resume",
    "dataset_text_field": "text_field",
    "bf16": "dtype: bfloat16",
    "load_in_4bit": "method: qlora",
    # peft LoraConfig
    "r": "lora_r",
    "lora_rank": "lora_r",
    # axolotl and LLaMA-Factory
    "base_model": "model",
    "micro_batch_size": "batch_size",
    "num_epochs": "epochs",
    "sequence_len": "max_length",
    "cutoff_len": "max_length",
    "sample_packing": "packing",
    "lora_target_modules": "target_modules",
    "lora_target": "target_modules",
    "val_set_size": "val_fraction",
    "datasets": "data",
    "dataset": "data",
    "adapter": "method",
    "finetuning_type": "method",
    # preference tuning: LLaMA-Factory's stage/pref_beta, axolotl's rl/rl_beta, TRL's DPOConfig
    "stage": "objective",
    "rl": "objective",
    "pref_beta": "beta",
    "rl_beta": "beta",
    "orpo_alpha": "beta",
    "precompute_ref_log_probs": "reference: precomputed",
    "ref_model": "reference",
    "ref_model_init_kwargs": "reference",
    "adapter_name_or_path": "init_adapter",
    "lora_model_dir": "init_adapter",
}
"""Config keys of the tools users come from -> the tuneforge field (or ``field: value``) for the
same setting, so an unknown-key error can name ours."""


def resolve_dtype(dtype: str, bf16_supported: bool) -> str:
    """The compute dtype a run uses: ``auto`` is bfloat16 where the device computes bf16
    natively, else float32 (the rule of ``models.device.native_bf16``, for training too).

    Args:
        dtype: one of DTYPES.
        bf16_supported: whether the device computes bf16 natively: a CUDA device of Ampere or
            later, a CPU with AVX512-BF16 (every CPU with AMX has it). The offline planner
            assumes a GPU does and a CPU does not (fp32 is the larger plan).

    Returns:
        ``float32`` or ``bfloat16``.
    """
    if dtype != "auto":
        return dtype
    return "bfloat16" if bf16_supported else "float32"


def resolve_strategy(strategy: str, world_size: int) -> str:
    """The strategy of a run with ``world_size`` processes: ``auto`` is ddp for several, else none.

    Raises:
        ConfigError: strategy ``none`` with several processes.
    """
    if strategy == "auto":
        return "ddp" if world_size > 1 else "none"
    if strategy == "none" and world_size > 1:
        raise ConfigError(
            f"train config field 'strategy' is 'none' (one process) but there are {world_size} "
            "processes (launched by torchrun, or planned with --gpus); use strategy ddp, fsdp "
            "or auto, or run one process"
        )
    return strategy


def resolve_reference(
    reference: str, objective: str, method: str, init_adapter: bool
) -> str | None:
    """DPO's reference as a run uses it (``auto`` resolved); None for sft and orpo (none).

    ``auto`` is ``base`` for a new LoRA/QLoRA adapter (the base with the adapter disabled: no
    memory, one no-grad forward per step); ``precomputed`` otherwise: for full fine-tuning,
    whose reference would otherwise be a whole frozen copy of the weights (precomputing needs
    none, and costs one forward per pair, as many as a copy runs in one epoch), and for a run
    that starts from an SFT adapter (``init_adapter``), whose reference is base + that adapter,
    which the disabled adapter is not.

    Args:
        reference: one of REFERENCES.
        objective: one of OBJECTIVES.
        method: one of METHODS.
        init_adapter: whether the run starts from a trained adapter.
    """
    if objective != "dpo":
        return None
    if reference != "auto":
        return reference
    return "base" if method in LORA_METHODS and not init_adapter else "precomputed"


def row_tokens(objective: str, max_length: int) -> int:
    """The longest batch row of a run, in tokens: ``max_length``, or for a preference pair the
    prompt once plus both completions, each conversation up to ``max_length``: at most
    ``2 * max_length - 1`` (a one-token prompt), planned as ``2 * max_length``."""
    return 2 * max_length if objective in PREFERENCE_OBJECTIVES else max_length
