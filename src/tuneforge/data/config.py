"""The typed configuration of the data pipeline, validated where it is built."""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.errors import ConfigError

FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text")
TRUNCATION_POLICIES = ("truncate", "drop")


@dataclass
class DataConfig:
    """How to turn a data file into training examples.

    Attributes:
        path: a JSONL/JSON/CSV/Parquet file, a folder of them, or a hub data set name.
        format: the shape of each record: ``auto`` (detected from the first record),
            ``messages``, ``sharegpt``, ``alpaca``, ``prompt_completion`` or ``text``.
        max_length: the longest example kept, in tokens.
        truncation: ``truncate`` cuts longer examples to ``max_length`` tokens; ``drop`` removes
            them. Either way they are counted in the report.
        train_on_inputs: if True every token carries loss (system and user turns too); by default
            only assistant turns (with their end-of-turn token) do.
        skip_invalid: skip and count invalid records instead of stopping at the first one.
        val_fraction: share of examples held out for validation, in [0, 1).
        seed: seed of the train/validation split.
        template_file: a Jinja chat template file that overrides the tokenizer's own.
        text_field: the field holding raw text for ``format="text"``.
        dedupe: remove exact duplicate examples (counted in the report).
    """

    path: str
    format: str = "auto"
    max_length: int = 1024
    truncation: str = "truncate"
    train_on_inputs: bool = False
    skip_invalid: bool = False
    val_fraction: float = 0.0
    seed: int = 0
    template_file: str | None = None
    text_field: str = "text"
    dedupe: bool = True

    def __post_init__(self) -> None:
        if not str(self.path).strip():
            raise ConfigError("data.path is empty; give a data file, a folder or a hub data set")
        self.path = str(self.path)
        if self.format not in FORMATS:
            raise ConfigError(
                f"data.format must be one of {', '.join(FORMATS)}; got {self.format!r}"
            )
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ConfigError(f"data.max_length must be an integer >= 2; got {self.max_length!r}")
        if self.truncation not in TRUNCATION_POLICIES:
            raise ConfigError(
                f"data.truncation must be 'truncate' or 'drop'; got {self.truncation!r}"
            )
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1); got {self.val_fraction!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"data.seed must be an integer; got {self.seed!r}")
        if not str(self.text_field).strip():
            raise ConfigError("data.text_field is empty; name the field that holds the text")
