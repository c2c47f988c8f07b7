"""What a config dataclass says about each of its fields: type, default, choices and help.

The command line (``tuneforge.cli.config_options``) and the web UI's training form
(``tuneforge.ui``) are both views of the config dataclasses; they read the fields from here, so
a field added once to a dataclass appears in YAML, on the command line, in ``--help`` and in the
UI. A field's help is its entry in the class docstring's ``Attributes:`` block; its choices are
``field(metadata={"choices": ...})`` (from ``tuneforge.tuning_vocabulary``).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

_ENTRY = re.compile(r"^(\s*)([A-Za-z_]\w*): (.*)$")

# The kinds of value a field may hold, as the command line and the UI spell them.
KINDS = {int: "int", float: "float", str: "str", bool: "bool"}


@dataclass(frozen=True)
class ConfigField:
    """One field of a config dataclass, as a command line or a form shows it.

    Attributes:
        name: the field (and YAML key) name.
        kind: ``int``, ``float``, ``str``, ``bool`` or ``list`` (a list of names, written
            ``A,B`` on the command line and in the UI).
        optional: whether null (``None``) is a valid value.
        default: the default value (a list default is a fresh list).
        choices: the allowed values (for a list: of each item), or None for any.
        help: the docstring entry, reST markup kept (``field_help`` strips it).
    """

    name: str
    kind: str
    optional: bool
    default: Any
    choices: tuple[str, ...] | None
    help: str


def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation, from the ``Attributes:`` block of ``cls``'s docstring.

    An entry is ``name: text`` with continuation lines indented deeper; entries end at a blank
    line or at a line indented less than the first entry.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Attributes:" not in (line.strip() for line in lines):
        return {}
    start = [line.strip() for line in lines].index("Attributes:") + 1
    docs: dict[str, str] = {}
    indent = None
    name = None
    for line in lines[start:]:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        match = _ENTRY.match(line)
        if indent is None:
            indent = depth
        if depth < indent:
            break
        if depth == indent and match:
            name = match.group(2)
            docs[name] = match.group(3).strip()
        elif name is not None:
            docs[name] += " " + line.strip()
    return docs


def field_help(text: str) -> str:
    """Docstring text without reST markup (````x```` -> ``x``)."""
    return text.replace("``", "")


def _default(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return None


def _without_none(hint: Any) -> tuple[Any, bool]:
    """``int | None`` -> ``(int, True)``; other hints -> ``(hint, False)``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0], len(kinds) < len(typing.get_args(hint))
    return hint, False


def nested_configs(cls: type) -> dict[str, type]:
    """The fields of ``cls`` whose type is itself a config dataclass: name -> that class."""
    hints = typing.get_type_hints(cls)
    nested = {}
    for item in dataclasses.fields(cls):
        kind, _ = _without_none(hints[item.name])
        if dataclasses.is_dataclass(kind):
            nested[item.name] = kind
    return nested


def config_fields(cls: type) -> list[ConfigField]:
    """The scalar and list fields of the dataclass ``cls``, in declaration order.

    Fields whose type is itself a dataclass are left out (``nested_configs`` names them; read
    their fields with their own call).

    Raises:
        ValueError: a field has no entry in the docstring's ``Attributes:`` block, or a type
            that has no command-line or form shape (programming errors, caught by the tests).
    """
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    nested = nested_configs(cls)
    described = []
    for item in dataclasses.fields(cls):
        if item.name in nested:
            continue
        if item.name not in docs:
            raise ValueError(
                f"{cls.__name__}.{item.name} has no entry in the class docstring's Attributes "
                "block: document it there, which is also its --help text"
            )
        hint, optional = _without_none(hints[item.name])
        if typing.get_origin(hint) is list:
            kind = "list"
        elif hint in KINDS:
            kind = KINDS[hint]
        else:
            raise ValueError(f"{cls.__name__}.{item.name}: no command-line form for {hint!r}")
        choices = item.metadata.get("choices")
        described.append(
            ConfigField(
                name=item.name,
                kind=kind,
                optional=optional,
                default=_default(item),
                choices=tuple(choices) if choices is not None else None,
                help=docs[item.name],
            )
        )
    return described
