"""The typed training configuration: YAML in, CLI overrides on top, validated field by field.

A training config nests the data pipeline's ``DataConfig`` under ``data``. Files and override
mappings may write the data options flat (``data: FILE``, ``max_length: 256`` at the top level,
as configs did before the nesting); ``config_from_dict`` routes them into ``data``. Every run
writes the resolved config, nested, as ``config.yaml`` in its run directory so it can be re-run
with ``tuneforge train --config RUN_DIR/config.yaml``.

Seeds: a training run has one ``seed``, which seeds initialisation, data order, dropout and the
train/validation split (``data.seed`` is set from it and is not a key of a training config), and
with ``store`` the RAFT examples' draws (``raft.seed``, likewise not a key).

With ``store`` set, ``data`` is a question file (``tuneforge.rag.qa_records``) and the run trains
on retrieval-augmented examples built over the store (``tuneforge.rag.raft``), configured by the
nested ``raft`` mapping (``RaftSettings``).
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tuneforge.data.config import DataConfig
from tuneforge.errors import ConfigError
from tuneforge.rag.raft import RaftSettings
from tuneforge.tuning_vocabulary import (
    BETA,
    DTYPES,
    LORA_ALPHA,
    LORA_DROPOUT,
    LORA_METHODS,
    LORA_R,
    METHODS,
    NAMES_IN_OTHER_TOOLS,
    OBJECTIVES,
    OPTIMIZERS,
    PREFERENCE_OBJECTIVES,
    REFERENCES,
    STRATEGIES,
)

SCHEDULES = ("cosine", "linear", "constant")
# Experiment trackers a run can also log its metrics to (``train.metrics``; optional extras).
REPORT_TARGETS = ("tensorboard", "mlflow")
# Data options a training config also takes at its top level (the form before ``data:`` nested);
# ``data`` itself may be a path string. The split seed is the run's ``seed``.
FLAT_DATA_KEYS = tuple(f.name for f in fields(DataConfig) if f.name not in ("path", "seed"))


@dataclass
class TrainConfig:
    """Everything a training run needs; one field per YAML key and per CLI option.

    Attributes:
        model: model reference: ``default``, a folder, a ``.gguf`` file or a hub id.
        data: the training data and how to read it (a ``DataConfig``; in YAML a file path or a
            mapping, and its options may also sit at the top level).
        val_data: a validation data file, read with the options of ``data``; when given,
            ``data.val_fraction`` is ignored.
        store: a RAG store folder: ``data`` is then a question file (question, answer, source)
            and the run trains on RAFT examples built over the store with the prompts ``rag
            ask`` builds; the adapter records that prompt format (``rag_prompt.json``).
        raft: how the RAFT examples are built with ``store`` (``RaftSettings``; in YAML a
            mapping under raft:).
        method: ``full`` (every weight trained), ``lora`` (frozen base + LoRA adapters) or
            ``qlora`` (frozen NF4 4-bit base + LoRA adapters).
        objective: what the run optimises: ``sft`` (next-token loss on the supervised tokens),
            ``dpo`` (Direct Preference Optimization, Rafailov et al. 2023) or ``orpo`` (Odds
            Ratio Preference Optimization, Hong et al. 2024); dpo and orpo read preference
            pairs (prompt, chosen, rejected) and combine with every method.
        beta: dpo: the strength of the pull towards the reference (the KL coefficient beta);
            orpo: the weight of the odds-ratio term (lambda in the paper).
        reference: dpo's reference model: ``base`` (lora/qlora: the base with the adapter
            disabled, no extra memory), ``copy`` (full: a frozen copy of the starting
            weights), ``precomputed`` (the starting model's log-probs of the pairs the run
            uses, computed once before training) or ``auto`` (base for a new adapter, else
            precomputed).
        init_adapter: a trained LoRA adapter folder (e.g. an SFT run's adapter/) to start from
            instead of a fresh adapter; its LoRA shape must match lora_r, lora_alpha,
            use_rslora and use_dora. With dpo its model (base + adapter) is the reference.
        out: the run directory.
        epochs: passes over the training data (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to run; overrides ``epochs``.
        lr: peak learning rate.
        batch_size: examples (or packed rows) per micro-batch, per process.
        grad_accum: micro-batches per optimizer step.
        packing: concatenate examples into rows of ``data.max_length`` tokens (block-diagonal
            attention) instead of padding each one.
        lora_r: LoRA rank ``r`` (peft's meaning).
        lora_alpha: LoRA scaling numerator: the update is scaled by ``lora_alpha / r``.
        lora_dropout: dropout probability on the LoRA input, in [0, 1).
        target_modules: module names to adapt; null = every linear layer but the output head.
        use_rslora: scale by ``lora_alpha / sqrt(r)`` (Kalajdzievski 2023) instead of ``/ r``.
        use_dora: weight-decomposed LoRA (Liu et al. 2024).
        dtype: compute dtype. ``float32``; ``bfloat16`` = bf16 autocast over fp32 trainable
            weights (frozen lora bases are stored in bf16); ``auto`` = bf16 where the device
            computes it natively (a GPU of Ampere or later, a CPU with AVX512-BF16 / AMX), else
            fp32.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
        strategy: across processes launched by ``torchrun``: ``ddp`` (replicated model,
            all-reduced gradients), ``fsdp`` (FSDP2: parameters, gradients and optimizer states
            sharded per transformer block), ``none`` (one process) or ``auto`` (ddp when
            launched on several processes, else none).
        gradient_checkpointing: recompute activations in backward to save memory.
        compile: compile each transformer block with ``torch.compile`` (fuses the elementwise
            work around the matmuls; the first steps pay the compile time, about a minute for
            the default model on 2 CPU cores). Needs a C++ compiler on CPU.
        optimizer: ``adamw`` (fp32 states), ``adamw_8bit`` or ``paged_adamw_8bit`` (bitsandbytes).
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm (0 = off).
        schedule: learning-rate schedule after warmup: ``cosine``, ``linear`` or ``constant``.
        warmup_ratio: share of the optimizer steps spent warming up linearly from 0.
        seed: seed of initialisation, data order, dropout and the train/validation split.
        eval_every: run validation every N optimizer steps (0 = at the end of each epoch).
        save_every: checkpoint every N optimizer steps (0 = off). Whatever the cadence, a run
            checkpoints at its end and when SIGINT/SIGTERM stops it (then exits 130/143).
        save_every_minutes: also checkpoint once this many minutes have passed since the last
            checkpoint (0 = off), so a crash loses minutes of training, not the run.
        log_every: write a metrics line every N optimizer steps.
        report_to: experiment trackers that also receive each metrics line: ``tensorboard``
            (event files in ``RUN/tensorboard``) and/or ``mlflow`` (``$MLFLOW_TRACKING_URI``,
            else a local file store in ``mlruns`` beside the run). ``metrics.jsonl`` is
            written either way and stays the record.
        keep_checkpoints: how many recent checkpoints to keep.
        early_stopping_patience: stop after N validations without improvement (0 = off).
        num_threads: torch CPU threads (null = torch's default).
        resume: continue from the newest checkpoint in ``out``.
        force: overwrite a non-empty ``out``.
        progress: show a progress bar.
    """

    model: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    val_data: str | None = None
    store: str | None = None
    raft: RaftSettings = field(default_factory=RaftSettings)
    method: str = field(default="lora", metadata={"choices": METHODS})
    objective: str = field(default="sft", metadata={"choices": OBJECTIVES})
    beta: float = BETA
    reference: str = field(default="auto", metadata={"choices": REFERENCES})
    init_adapter: str | None = None
    out: str = "runs/run"
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    packing: bool = False
    lora_r: int = LORA_R
    lora_alpha: float = LORA_ALPHA
    lora_dropout: float = LORA_DROPOUT
    target_modules: list[str] | None = None
    use_rslora: bool = False
    use_dora: bool = False
    dtype: str = field(default="auto", metadata={"choices": DTYPES})
    device: str = "auto"
    strategy: str = field(default="auto", metadata={"choices": STRATEGIES})
    gradient_checkpointing: bool = False
    compile: bool = False
    optimizer: str = field(default="adamw", metadata={"choices": OPTIMIZERS})
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    warmup_ratio: float = 0.03
    seed: int = 0
    eval_every: int = 0
    save_every: int = 0
    save_every_minutes: float = 10.0
    log_every: int = 1
    report_to: list[str] = field(default_factory=list, metadata={"choices": REPORT_TARGETS})
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
        _check(
            isinstance(self.data, DataConfig),
            "data",
            "must be a DataConfig (build configs from YAML or mappings with config_from_dict)",
        )
        _check(
            isinstance(self.model, str) and bool(self.model.strip()),
            "model",
            "must be a model reference (default, a folder, a .gguf file or a hub id)",
        )
        _check(
            self.val_data is None
            or (isinstance(self.val_data, str) and bool(self.val_data.strip())),
            "val_data",
            "must be a data file or null",
        )
        _check(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}")
        _check(self.objective in OBJECTIVES, "objective", f"must be one of {', '.join(OBJECTIVES)}")
        _check(self.reference in REFERENCES, "reference", f"must be one of {', '.join(REFERENCES)}")
        _check(
            _is_number(self.beta) and self.beta > 0,
            "beta",
            f"must be a number > 0; got {self.beta!r}",
        )
        _check(
            self.init_adapter is None
            or (isinstance(self.init_adapter, str) and bool(self.init_adapter.strip())),
            "init_adapter",
            "must be an adapter folder or null",
        )
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
            _is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1,
            "warmup_ratio",
            f"must be in [0, 1); got {self.warmup_ratio!r}",
        )
        for name in ("weight_decay", "max_grad_norm", "save_every_minutes"):
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
        if isinstance(self.report_to, str):
            self.report_to = [t.strip() for t in self.report_to.split(",") if t.strip()]
        _check(
            isinstance(self.report_to, list) and set(self.report_to) <= set(REPORT_TARGETS),
            "report_to",
            f"must be a list of {', '.join(REPORT_TARGETS)} (or empty); got {self.report_to!r}",
        )
        for name in (
            "packing",
            "use_rslora",
            "use_dora",
            "gradient_checkpointing",
            "compile",
            "resume",
            "force",
            "progress",
        ):
            value = getattr(self, name)
            _check(isinstance(value, bool), name, f"must be true or false; got {value!r}")
        _check(
            not (self.method == "full" and (self.use_dora or self.use_rslora)),
            "method",
            "is 'full' but use_dora/use_rslora are LoRA options; use method lora or qlora",
        )
        _check(
            self.store is None or (isinstance(self.store, str) and bool(self.store.strip())),
            "store",
            f"must be a RAG store folder or null; got {self.store!r}",
        )
        _check(
            self.store is None or self.val_data is None,
            "val_data",
            "cannot be used with store (the question file is split with data.val_fraction)",
        )
        self._check_objective()
        if self.data.seed != self.seed:  # the split follows the run's seed (module docstring)
            self.data = replace(self.data, seed=self.seed)
        if self.raft.seed != self.seed:  # so do the RAFT draws
            self.raft = replace(self.raft, seed=self.seed)

    def _check_objective(self) -> None:
        """The objective, its reference and its data fit the method and the batching."""
        preference = self.objective in PREFERENCE_OBJECTIVES
        _check(
            not (preference and self.store is not None),
            "store",
            f"builds RAFT examples (prompt and one reply), which objective {self.objective} "
            "cannot train on (it reads preference pairs); use objective sft with store",
        )
        _check(
            self.reference == "auto" or self.objective == "dpo",
            "reference",
            f"is '{self.reference}', but only objective dpo has a reference model (objective "
            f"is '{self.objective}'); leave it auto",
        )
        _check(
            self.reference != "base" or self.uses_lora,
            "reference",
            "is 'base' (the base with the adapter disabled), which needs method lora or qlora; "
            "full fine-tuning uses reference copy or precomputed",
        )
        _check(
            self.reference != "copy" or self.method == "full",
            "reference",
            "is 'copy' (a frozen copy of the whole model), which is for method full; a LoRA "
            "run's reference is its own base with the adapter disabled (reference base)",
        )
        _check(
            not (self.reference == "copy" and self.strategy == "fsdp"),
            "reference",
            "is 'copy', which strategy fsdp does not shard (each process would hold the whole "
            "model); use reference precomputed",
        )
        _check(
            self.init_adapter is None or self.uses_lora,
            "init_adapter",
            "is a LoRA adapter, which needs method lora or qlora",
        )
        _check(
            not (preference and self.packing),
            "packing",
            f"is on, but objective {self.objective} builds its own rows (a pair's prompt once, "
            "then both completions); turn packing off",
        )
        _check(
            not (preference and self.data.train_on_inputs),
            "objective",
            f"is '{self.objective}', which compares the completions only; data.train_on_inputs "
            "(loss on the prompt too) does not apply: turn it off",
        )
        _check(
            self.data.format in ("auto", "preference") if preference else True,
            "objective",
            f"is '{self.objective}', which reads preference pairs, but data.format is "
            f"'{self.data.format}'; use format preference or auto",
        )
        _check(
            self.data.format != "preference" or preference,
            "objective",
            "is 'sft', but data.format is 'preference' (prompt, chosen, rejected): use "
            "objective dpo or orpo for preference pairs",
        )

    @property
    def uses_lora(self) -> bool:
        """True for the methods that train LoRA adapters on a frozen base."""
        return self.method in LORA_METHODS

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-ready values, ``data`` nested (without its seed: ``seed``);
        ``raft`` nested (without its seed) only when ``store`` is set."""
        values = asdict(self)
        del values["data"]["seed"]
        if self.store is None:
            del values["raft"]
        else:
            del values["raft"]["seed"]
        return values


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"train config field '{name}' {message}")


def field_names() -> list[str]:
    """The top-level YAML keys a training config accepts (data options may also sit there)."""
    return [f.name for f in fields(TrainConfig)] + list(FLAT_DATA_KEYS)


def nest_data_options(values: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Route a mapping's data options into ``data``: a path string and flat keys become nested.

    ``{"data": "a.jsonl", "max_length": 256, "lr": 1e-3}`` becomes
    ``{"data": {"path": "a.jsonl", "max_length": 256}, "lr": 1e-3}``.

    Raises:
        ConfigError: ``data`` is neither a path nor a mapping, a data option is given both flat
            and nested, or ``data.seed`` is set (the split uses the run's ``seed``).
    """
    values = dict(values)
    data = values.pop("data", None)
    if data is None:
        nested: dict[str, Any] = {}
    elif isinstance(data, str):
        nested = {"path": data}
    elif isinstance(data, dict):
        nested = dict(data)
    elif isinstance(data, DataConfig):
        nested = {f.name: getattr(data, f.name) for f in fields(DataConfig) if f.name != "seed"}
    else:
        raise ConfigError(
            f"{source}: train config field 'data' must be a data file path, a mapping of data "
            f"options (path, max_length, ...) or a DataConfig; got {data!r}"
        )
    for key in FLAT_DATA_KEYS:
        if key in values:
            if key in nested:
                raise ConfigError(
                    f"{source}: '{key}' is given twice, at the top level and under 'data'; keep one"
                )
            nested[key] = values.pop(key)
    if "seed" in nested:
        raise ConfigError(
            f"{source}: data.seed is not a training config key: a run splits its data with the "
            "run's 'seed'; set seed at the top level"
        )
    values["data"] = nested
    return values


def _unknown_key(key: str, known: list[str], source: str, kind: str) -> ConfigError:
    ours = NAMES_IN_OTHER_TOOLS.get(key)
    if ours is not None:
        hint = (
            f"; did you mean '{ours}'? ('{key}' is another tool's name: transformers, TRL, peft...)"
        )
    else:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{source}: unknown {kind} field '{key}'{hint}")


# A plain decimal number: YAML 1.1 (PyYAML) reads ``1e-3`` or ``5E-4`` as a string, since its
# float grammar wants a dot and a signed exponent. Hex, ``nan``, ``inf`` or ``1,5`` stay strings.
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _number_fields(cls: type) -> dict[str, type]:
    """The fields of the dataclass ``cls`` that hold an int or a float (optional or not)."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
        if len(options) == 1 and options[0] in (int, float):
            kinds[name] = options[0]
    return kinds


def _as_number(value: Any, kind: type) -> Any:
    """``value`` as a ``kind`` when it plainly is one: a decimal string (``'1e-3'``, ``'16'``),
    or a whole float for an int field (``2.0``, ``'1e3'``); anything else unchanged, for the
    field's own check to refuse with the value as written."""
    number = value
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        text = value.strip()
        number = int(text) if _INTEGER.fullmatch(text) else float(text)
    if kind is int and isinstance(number, float):
        return int(number) if number.is_integer() else value
    return number


def read_numbers(values: dict[str, Any], cls: type) -> dict[str, Any]:
    """Turn numbers written as strings into numbers for the int and float fields of ``cls``.

    YAML 1.1 reads ``lr: 1e-3`` as the string ``'1e-3'``; a user means the number. Only plain
    decimals are read (see ``_as_number``); other values are left for validation to refuse.
    """
    kinds = _number_fields(cls)
    return {
        key: _as_number(value, kinds[key]) if key in kinds else value
        for key, value in values.items()
    }


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a mapping (flat or nested data options; see the module docstring).

    Numbers written as strings (``lr: 1e-3``, which YAML 1.1 reads as a string) are read as
    numbers (``read_numbers``).

    Raises:
        ConfigError: an unknown key or an invalid value; the message names the source and field.
    """
    values = nest_data_options(values, source)
    known = [f.name for f in fields(TrainConfig)]
    for key in values:
        if key not in known:
            raise _unknown_key(key, field_names(), source, "train config")
    data_known = [f.name for f in fields(DataConfig) if f.name != "seed"]
    for key in values["data"]:
        if key not in data_known:
            raise _unknown_key(key, data_known, source, "data config")
    raft = values.pop("raft", None) or {}
    if isinstance(raft, RaftSettings):
        raft = {f.name: getattr(raft, f.name) for f in fields(RaftSettings) if f.name != "seed"}
    if not isinstance(raft, dict):
        raise ConfigError(f"{source}: raft must be a mapping of RAFT settings; got {raft!r}")
    raft_known = [f.name for f in fields(RaftSettings) if f.name != "seed"]
    for key in raft:
        if key not in raft_known:
            raise _unknown_key(key, raft_known, source, "raft")
    try:
        data = DataConfig(**read_numbers(values.pop("data"), DataConfig))
        settings = RaftSettings(**read_numbers(raft, RaftSettings))
        return TrainConfig(data=data, raft=settings, **read_numbers(values, TrainConfig))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    except TypeError as err:  # e.g. a nested mapping where a scalar belongs
        raise ConfigError(f"{source}: {err}") from err


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a training config must be a mapping of field: value")
    return loaded


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML config (optional) and apply overrides (None values are ignored).

    Both may write data options flat or nested (``data: {path: ..., max_length: ...}``); an
    override replaces one data option and keeps the file's others.

    Args:
        path: a YAML file of ``field: value`` pairs, or None to start from the defaults.
        overrides: values that win over the file, e.g. from the command line.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown field or invalid value.
    """
    source = "command line"
    values: dict[str, Any] = {"data": {}}
    if path is not None:
        path = Path(path)
        source = str(path)
        values = nest_data_options(_read_yaml(path), source)
    given = nest_data_options(
        {k: v for k, v in (overrides or {}).items() if v is not None}, "command line"
    )
    data = {**values.pop("data"), **given.pop("data")}
    # an override replaces one RAFT setting and keeps the file's others, as for data
    raft = {**(values.pop("raft", None) or {}), **(given.pop("raft", None) or {})}
    return config_from_dict({**values, **given, "data": data, "raft": raft}, source)


def dump_config(config: TrainConfig) -> str:
    """The config as YAML text, in field order."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
