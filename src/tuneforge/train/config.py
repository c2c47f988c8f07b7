"""The typed training configuration: YAML in, CLI overrides on top, validated field by field.

Every run writes the resolved config as ``config.yaml`` in its run directory so it can be re-run
with ``tuneforge train --config RUN_DIR/config.yaml``.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError

METHODS = ("full", "lora", "qlora")
DTYPES = ("auto", "float32", "bfloat16")
SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")
STRATEGIES = ("auto", "none", "ddp", "fsdp")


@dataclass
class TrainConfig:
    """Everything a training run needs; one field per YAML key and per CLI option.

    Attributes:
        model: model reference: ``default``, a folder, a ``.gguf`` file or a hub id.
        data: training data file (any format ``tuneforge.data`` reads).
        val_data: optional validation file; else ``val_fraction`` of ``data`` is held out.
        val_fraction: share of ``data`` held out for validation when ``val_data`` is not given.
        method: ``full`` (every weight trained), ``lora`` (frozen base + LoRA adapters) or
            ``qlora`` (frozen NF4 4-bit base + LoRA adapters).
        out: the run directory.
        epochs: passes over the training data (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to run; overrides ``epochs``.
        lr: peak learning rate.
        batch_size: examples (or packed rows) per micro-batch.
        grad_accum: micro-batches per optimizer step.
        max_length: longest sequence, in tokens.
        packing: concatenate examples into rows of ``max_length`` tokens (block-diagonal attention).
        train_on_inputs: also put loss on system/user tokens.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator, dropout (peft's meaning).
        target_modules: module names to adapt; None = every linear layer but the output head.
        use_rslora: scale by ``lora_alpha / sqrt(r)`` (Kalajdzievski 2023) instead of ``/ r``.
        use_dora: weight-decomposed LoRA (Liu et al. 2024).
        dtype: compute dtype. ``float32``; ``bfloat16`` = bf16 autocast over fp32 trainable
            weights (frozen lora bases are stored in bf16); ``auto`` = bf16 on capable CUDA.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        strategy: across processes launched by ``torchrun``: ``ddp`` (replicated model,
            all-reduced gradients), ``fsdp`` (FSDP2: parameters, gradients and optimizer states
            sharded per transformer block), ``none`` (one process) or ``auto`` (ddp when
            launched on several processes, else none). ``batch_size`` is per process.
        gradient_checkpointing: recompute activations in backward to save memory.
        compile: compile each transformer block with ``torch.compile`` (fuses the elementwise
            work around the matmuls; the first steps pay the compile time, about a minute for
            the default model on 2 CPU cores). Needs a C++ compiler on CPU.
        optimizer: ``adamw`` (fp32 states), ``adamw_8bit`` or ``paged_adamw_8bit`` (bitsandbytes).
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm (0 = off).
        schedule: learning-rate schedule after warmup: ``cosine``, ``linear`` or ``constant``.
        warmup_ratio: share of the optimizer steps spent warming up linearly from 0.
        seed: seed of initialisation, data order and dropout.
        eval_every: run validation every N optimizer steps (0 = at the end of each epoch).
        save_every: checkpoint every N optimizer steps (0 = only at the end).
        log_every: write a metrics line every N optimizer steps.
        keep_checkpoints: how many recent checkpoints to keep.
        early_stopping_patience: stop after N validations without improvement (0 = off).
        num_threads: torch CPU threads (None = torch's default).
        resume: continue from the newest checkpoint in ``out``.
        force: overwrite a non-empty ``out``.
        progress: show a progress bar.
    """

    data: str = ""
    model: str = "default"
    val_data: str | None = None
    val_fraction: float = 0.0
    method: str = "lora"
    out: str = "runs/run"
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    packing: bool = False
    train_on_inputs: bool = False
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None
    use_rslora: bool = False
    use_dora: bool = False
    dtype: str = "auto"
    device: str = "auto"
    strategy: str = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    schedule: str = "cosine"
    warmup_ratio: float = 0.03
    seed: int = 0
    eval_every: int = 0
    save_every: int = 0
    log_every: int = 1
    keep_checkpoints: int = 2
    early_stopping_patience: int = 0
    num_threads: int | None = None
    resume: bool = False
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field and what it accepts."""
        _check(bool(str(self.data).strip()), "data", "is empty; give a training data file")
        _check(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}")
        _check(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
        _check(self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}")
        _check(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        _check(self.strategy in STRATEGIES, "strategy", f"must be one of {', '.join(STRATEGIES)}")
        for name in ("epochs", "batch_size", "grad_accum", "lora_r", "log_every"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, f"must be an integer >= 1; got {value!r}")
        for name in ("eval_every", "save_every", "early_stopping_patience", "seed"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 0, name, f"must be an integer >= 0; got {value!r}")
        _check(
            _is_int(self.keep_checkpoints) and self.keep_checkpoints >= 1,
            "keep_checkpoints",
            f"must be an integer >= 1; got {self.keep_checkpoints!r}",
        )
        _check(
            self.max_steps is None or (_is_int(self.max_steps) and self.max_steps >= 1),
            "max_steps",
            f"must be an integer >= 1 or null; got {self.max_steps!r}",
        )
        _check(
            _is_int(self.max_length) and self.max_length >= 8,
            "max_length",
            f"must be an integer >= 8 tokens; got {self.max_length!r}",
        )
        _check(_is_number(self.lr) and self.lr > 0, "lr", f"must be a number > 0; got {self.lr!r}")
        _check(
            _is_number(self.lora_alpha) and self.lora_alpha > 0,
            "lora_alpha",
            f"must be a number > 0; got {self.lora_alpha!r}",
        )
        _check(
            _is_number(self.lora_dropout) and 0 <= self.lora_dropout < 1,
            "lora_dropout",
            f"must be in [0, 1); got {self.lora_dropout!r}",
        )
        _check(
            _is_number(self.val_fraction) and 0 <= self.val_fraction < 1,
            "val_fraction",
            f"must be in [0, 1); got {self.val_fraction!r}",
        )
        _check(
            _is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1,
            "warmup_ratio",
            f"must be in [0, 1); got {self.warmup_ratio!r}",
        )
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            _check(_is_number(value) and value >= 0, name, f"must be a number >= 0; got {value!r}")
        _check(
            self.num_threads is None or (_is_int(self.num_threads) and self.num_threads >= 1),
            "num_threads",
            f"must be an integer >= 1 or null; got {self.num_threads!r}",
        )
        if isinstance(self.target_modules, str):
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        _check(
            self.target_modules is None
            or (
                isinstance(self.target_modules, list)
                and self.target_modules
                and all(isinstance(m, str) and m for m in self.target_modules)
            ),
            "target_modules",
            "must be a non-empty list of module names (e.g. [q_proj, v_proj]) or null for every "
            "linear layer but the output head",
        )
        for name in (
            "packing",
            "train_on_inputs",
            "use_rslora",
            "use_dora",
            "gradient_checkpointing",
            "compile",
            "resume",
            "force",
        ):
            value = getattr(self, name)
            _check(isinstance(value, bool), name, f"must be true or false; got {value!r}")
        _check(
            not (self.method == "full" and (self.use_dora or self.use_rslora)),
            "method",
            "is 'full' but use_dora/use_rslora are LoRA options; use method lora or qlora",
        )

    @property
    def uses_lora(self) -> bool:
        """True for the methods that train LoRA adapters on a frozen base."""
        return self.method in ("lora", "qlora")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-ready values."""
        return asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"train config field '{name}' {message}")


def field_names() -> list[str]:
    """The YAML keys a training config accepts."""
    return [f.name for f in fields(TrainConfig)]


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a mapping, refusing unknown keys with a suggestion.

    Raises:
        ConfigError: an unknown key or an invalid value (the message names the field).
    """
    known = set(field_names())
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown train config field '{key}'{hint}")
    try:
        return TrainConfig(**values)
    except TypeError as err:  # e.g. a nested mapping where a scalar belongs
        raise ConfigError(f"{source}: {err}") from err


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML config (optional) and apply overrides (None values are ignored).

    Args:
        path: a YAML file of ``field: value`` pairs, or None to start from the defaults.
        overrides: values that win over the file, e.g. from the command line.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown field or invalid value.
    """
    import yaml

    values: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the config file ({err})") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({err})") from err
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a training config must be a mapping of field: value")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(values, source)


def dump_config(config: TrainConfig) -> str:
    """The config as YAML text, in field order."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
