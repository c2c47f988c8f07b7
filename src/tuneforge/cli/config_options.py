"""Command-line options generated from a config dataclass: one field, one option.

As in litgpt, where a function's signature is its command line, a config dataclass is the
command line of the commands that build it: ``--field-name`` per field, its type (``int``,
``float``, ``str``; ``bool`` as ``--x/--no-x``; ``X | None``; a ``list[str]`` as ``A,B``), its
choices (``field(metadata={"choices": ...})``, from ``tuneforge.tuning_vocabulary``) and its
help, the field's entry in the class docstring's ``Attributes:`` block. A field added once to
the dataclass appears in YAML, on the command line, in ``--help`` and in the web UI's form (both
read the fields through ``tuneforge.config_fields``).

Options default to "not given" (``argparse.SUPPRESS``), so a value from a YAML file survives
unless the option is passed; ``given_options`` collects the ones that were.
"""

from __future__ import annotations

import argparse
from typing import Any

from tuneforge.config_fields import config_fields, field_help

__all__ = ["add_config_options", "given_options"]


def _help(text: str, default: Any) -> str:
    """Docstring text as argparse help: no reST markup, ``%`` escaped, the real default added."""
    text = field_help(text).replace("%", "%%")
    if default is None or default == []:
        return text
    if isinstance(default, bool):
        default = "true" if default else "false"
    return f"{text} (default: {default})"


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
    rename = rename or {}
    dests = []
    for item in config_fields(cls):
        if item.name in skip or (only is not None and item.name not in only):
            continue
        dest = rename.get(item.name, item.name)
        flag = "--" + dest.replace("_", "-")
        text = _help(item.help, item.default)
        options: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": text}
        if item.kind == "bool":
            options["action"] = argparse.BooleanOptionalAction
        elif item.kind == "list":
            # kept as text: the config turns "a,b" into ["a", "b"] (as it does for YAML) and
            # checks each name against the choices
            metavar = "{" + ",".join(item.choices) + "}[,...]" if item.choices else "NAME,NAME..."
            options.update(type=str, metavar=metavar)
        else:
            options["type"] = {"int": int, "float": float, "str": str}[item.kind]
            if item.choices is not None:
                options["choices"] = item.choices
        parser.add_argument(flag, **options)
        dests.append(dest)
    return dests


def given_options(args: argparse.Namespace, dests: list[str]) -> dict[str, Any]:
    """The options among ``dests`` that were given on the command line, by dest."""
    return {dest: getattr(args, dest) for dest in dests if hasattr(args, dest)}
