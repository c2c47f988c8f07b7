"""The training form: its fields come from the config dataclasses, its values become a
``TrainConfig`` by the path YAML and the command line take (``config_from_dict``).

``form_schema()`` describes every field of ``TrainConfig`` and of its nested ``DataConfig``
(``tuneforge.config_fields``: the source of the command line's options too), so a field added
to a dataclass appears in the form with its type, choices, default and help. A few fields are
the UI's to set (``UI_SETS``) and are not in the form. ``config_from_form`` turns the form's
text values into a config; a value it refuses comes back as a ``FieldError`` naming the field
the page shows it next to.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tuneforge.config_fields import config_fields, field_help
from tuneforge.errors import ConfigError

# Fields of TrainConfig the UI sets itself, and why they are not in the form.
UI_SETS = {
    "out": "the run folder is RUNS/<run name>",
    "resume": "a stopped run is continued with its Resume button",
    "force": "the UI never overwrites a run folder",
    "progress": "a run started in the UI logs lines, not a progress bar",
}
# DataConfig fields the training config does not take (the split uses the run's seed).
DATA_SKIPPED = ("seed",)
DATA_PREFIX = "data."

# What a ConfigError message names: "field 'lr'", "'lr' is given twice", "data.max_length".
_TOP_FIELD = re.compile(r"field '(\w+)'|'(\w+)' is given twice")
_DATA_FIELD = re.compile(r"\bdata\.(\w+)")


class FieldError(ConfigError):
    """A form value the config refuses.

    Attributes:
        field: the form's name of the field (``lr``, ``data.max_length``), or None when the
            message names none.
    """

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


def form_schema() -> dict[str, Any]:
    """The form's sections and fields, as JSON-ready data.

    Returns:
        ``{"sections": [{"title", "fields": [{"name", "kind", "optional", "default",
        "choices", "help"}]}], "ui_sets": {field: why}}``; data fields are named ``data.X``.
    """
    from tuneforge.data.config import DataConfig
    from tuneforge.train.config import TrainConfig

    def describe(cls: type, prefix: str, skip) -> list[dict[str, Any]]:
        described = []
        for item in config_fields(cls):
            if item.name in skip:
                continue
            entry = asdict(item)
            entry["name"] = prefix + item.name
            entry["help"] = field_help(item.help)
            described.append(entry)
        return described

    return {
        "sections": [
            {"title": "training", "fields": describe(TrainConfig, "", UI_SETS)},
            {"title": "data", "fields": describe(DataConfig, DATA_PREFIX, DATA_SKIPPED)},
        ],
        "ui_sets": UI_SETS,
    }


def _value(kind: str, optional: bool, raw: Any) -> Any:
    """A form value as the config reads it: text stays text (``read_numbers`` reads numbers
    as YAML values are read), an empty box is null for an optional field."""
    if kind == "bool":
        return raw
    if isinstance(raw, str) and not raw.strip():
        if optional:
            return None
        if kind == "list":
            return []
    return raw.strip() if isinstance(raw, str) else raw


def field_of(message: str) -> str | None:
    """The form field a ConfigError message names (``data.X`` for a data option)."""
    data = _DATA_FIELD.search(message)
    if data:
        return DATA_PREFIX + data.group(1)
    top = _TOP_FIELD.search(message)
    if top:
        return top.group(1) or top.group(2)
    return None


def config_from_form(values: dict[str, Any], out: Path):
    """Build the ``TrainConfig`` of a filled-in form.

    Args:
        values: field name (``data.X`` for data options) -> the box's text, or a bool for a
            checkbox. Fields left out keep their defaults.
        out: the run folder.

    Raises:
        FieldError: a value the config refuses, or a field the config does not have.
    """
    from tuneforge.train.config import config_from_dict

    kinds = {
        entry["name"]: (entry["kind"], entry["optional"])
        for section in form_schema()["sections"]
        for entry in section["fields"]
    }
    top: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in kinds:
            raise FieldError(f"the form has no field {name!r}", name)
        value = _value(*kinds[name], raw)
        if name.startswith(DATA_PREFIX):
            data[name.removeprefix(DATA_PREFIX)] = value
        else:
            top[name] = value
    top.update(out=str(out), resume=False, force=False, progress=False, data=data)
    try:
        return config_from_dict(top, source="form")
    except ConfigError as err:
        message = str(err).removeprefix("form: ")
        raise FieldError(message, field_of(message)) from err
