"""Command-line options generated from a config dataclass: one field, one option.

As in litgpt, where a function's signature is its command line, a config dataclass is the
command line of the commands that build it: ``--field-name`` per field, its type (``int``,
``float``, ``str``; ``bool`` as ``--x/--no-x``; ``X | None``; a ``list[str]`` as ``A,B``), its
choices (``field(metadata={"choices": ...})``, from ``tuneforge.tuning_vocabulary``) and its
help, the field's entry in the class docstring's ``Attributes:`` block. A field added once to
the dataclass appears in YAML, on the command line and in ``--help``.

Options default to "not given" (``argparse.SUPPRESS``), so a value from a YAML file survives
unless the option is passed; ``given_options`` collects the ones that were.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any

_ENTRY = re.compile(r"^(\s*)([A-Za-z_]\w*): (.*)$")


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


def _help(text: str, default: Any) -> str:
    """Docstring text as argparse help: no reST markup, ``%`` escaped, the real default added."""
    text = text.replace("``", "").replace("%", "%%")
    if default is None:
        return text
    if isinstance(default, bool):
        default = "true" if default else "false"
    return f"{text} (default: {default})"


def _default(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return None


def _base_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; other hints unchanged."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return hint


def add_config_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
) -> list[str]:
    """Add one option per field of the dataclass ``cls`` to ``parser``.

    Fields whose type is itself a dataclass are left out (add them with their own call).

    Args:
        parser: a parser or an argument group.
        cls: the config dataclass.
        only: the fields to add (default: all); ``skip``: fields to leave out.
        rename: field -> option name where they differ (``{"path": "data"}`` -> ``--data``).

    Returns:
        the ``dest`` of each option added (the field name, or its new name), for
        ``given_options``.

    Raises:
        ValueError: a field has no entry in the docstring's ``Attributes:`` block, or a type
            that has no command-line form (a programming error, caught by the tests).
    """
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    rename = rename or {}
    dests = []
    for item in dataclasses.fields(cls):
        if item.name in skip or (only is not None and item.name not in only):
            continue
        kind = _base_type(hints[item.name])
        if dataclasses.is_dataclass(kind):
            continue
        if item.name not in docs:
            raise ValueError(
                f"{cls.__name__}.{item.name} has no entry in the class docstring's Attributes "
                "block: document it there, which is also its --help text"
            )
        dest = rename.get(item.name, item.name)
        flag = "--" + dest.replace("_", "-")
        text = _help(docs[item.name], _default(item))
        options: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            # kept as text: the config turns "a,b" into ["a", "b"] (as it does for YAML)
            options.update(type=str, metavar="NAME,NAME...")
        elif kind in (int, float, str):
            options["type"] = kind
        else:
            raise ValueError(f"{cls.__name__}.{item.name}: no command-line form for {kind!r}")
        if "choices" in item.metadata:
            options["choices"] = item.metadata["choices"]
        parser.add_argument(flag, **options)
        dests.append(dest)
    return dests


def given_options(args: argparse.Namespace, dests: list[str]) -> dict[str, Any]:
    """The options among ``dests`` that were given on the command line, by dest."""
    return {dest: getattr(args, dest) for dest in dests if hasattr(args, dest)}
