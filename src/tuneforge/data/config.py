"""The typed configuration of the data pipeline, validated where it is built.

``DataConfig`` is both what ``tuneforge data inspect|validate`` reads and the ``data:`` section of
a training config, so training accepts every data option and checks it by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge.errors import ConfigError

FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text", "preference")
TRUNCATION_POLICIES = ("truncate", "drop")
MIN_MAX_LENGTH = 2  # one token to predict from one token before it


@dataclass
class DataConfig:
    """How to turn a data file into training examples.

    Attributes:
        path: the data: a JSONL/JSON/CSV/Parquet file, a folder of them, or a hub data set
            name. Empty means none given yet (enough to plan memory; reading refuses it).
        format: the shape of each record: ``auto`` (detected from the first record of each
            file), ``messages``, ``sharegpt``, ``alpaca``, ``prompt_completion``, ``text`` or
            ``preference`` (prompt, chosen, rejected: for objective dpo or orpo).
        max_length: the longest example, in tokens (at least 2); also the length of a packed
            row. For a preference pair it bounds each of prompt + chosen and prompt + rejected.
        truncation: what happens to an example longer than ``max_length``: ``truncate`` cuts
            it, ``drop`` removes it. Either way it is counted in the report. A preference
            pair's prompt is never cut: both completions are cut to the same budget
            (``max_length`` minus the prompt's tokens), and a pair whose prompt leaves no room
            is dropped and counted.
        train_on_inputs: every token carries loss (system and user turns too); by default only
            assistant turns (with their end-of-turn token) do.
        skip_invalid: skip and count invalid records instead of stopping at the first one.
        val_fraction: share of the examples held out for validation, in [0, 1).
        seed: seed of the train/validation split. In a training config the split uses the
            run's ``seed``, so one seed reproduces a run; this key is not set there.
        template_file: a Jinja chat template file that overrides the tokenizer's own.
        text_field: the field holding the raw text of a ``text`` record.
        keep_duplicates: keep exact duplicate examples; by default they are removed and
            counted in the report.
    """

    path: str = ""
    format: str = field(default="auto", metadata={"choices": FORMATS})
    max_length: int = 1024
    truncation: str = field(default="truncate", metadata={"choices": TRUNCATION_POLICIES})
    train_on_inputs: bool = False
    skip_invalid: bool = False
    val_fraction: float = 0.0
    seed: int = 0
    template_file: str | None = None
    text_field: str = "text"
    keep_duplicates: bool = False

    def __post_init__(self) -> None:
        _check(self, isinstance(self.path, str), "path", "must be a path or a name")
        _check(self, self.format in FORMATS, "format", f"must be one of {', '.join(FORMATS)}")
        _check(
            self,
            _is_int(self.max_length) and self.max_length >= MIN_MAX_LENGTH,
            "max_length",
            f"must be an integer >= {MIN_MAX_LENGTH} tokens",
        )
        _check(
            self,
            self.truncation in TRUNCATION_POLICIES,
            "truncation",
            f"must be one of {', '.join(TRUNCATION_POLICIES)}",
        )
        for name in ("train_on_inputs", "skip_invalid", "keep_duplicates"):
            _check(self, isinstance(getattr(self, name), bool), name, "must be true or false")
        _check(
            self,
            isinstance(self.val_fraction, int | float)
            and not isinstance(self.val_fraction, bool)
            and 0 <= self.val_fraction < 1,
            "val_fraction",
            "must be in [0, 1)",
        )
        _check(self, _is_int(self.seed) and self.seed >= 0, "seed", "must be an integer >= 0")
        _check(
            self,
            self.template_file is None or isinstance(self.template_file, str),
            "template_file",
            "must be a file path or null",
        )
        _check(
            self,
            isinstance(self.text_field, str) and bool(self.text_field.strip()),
            "text_field",
            "is empty; name the field that holds the text",
        )

    def require_path(self) -> str:
        """The data path; planning needs none, but reading does.

        Raises:
            ConfigError: no path was given.
        """
        if not self.path.strip():
            raise ConfigError(
                "no data given (the 'data' field is empty); pass --data FILE, or set data: FILE "
                "in the YAML config"
            )
        return self.path


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(config: DataConfig, ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"data.{name} {message}; got {getattr(config, name)!r}")
