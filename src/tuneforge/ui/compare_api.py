"""The compare page's API: the reports of ``tuneforge compare``, and starting one.

The form's options are read from the ``compare`` command's own argument parser (the CLI hands
it over: ``UiSettings.compare_parser``), so an option added to the command appears on the page with its type, choices, default and help, and the UI
starts exactly ``python -m tuneforge compare --out RUNS/compare/NAME --option value ...``.
``--out`` is the UI's to set (one folder per comparison under the runs folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from tuneforge.errors import ConfigError
from tuneforge.serve.errors import ApiError
from tuneforge.ui.jobs import log_tail
from tuneforge.ui.runs import log_path
from tuneforge.ui.settings import COMPARE_FOLDER, UiState, checked_name

# Options of the compare command that the UI sets itself.
UI_SETS = ("out", "help")


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction):
        return "bool"
    if action.type is int:
        return "int"
    if action.type is float:
        return "float"
    return "str"


def _flag(action: argparse.Action) -> str:
    """The long option (``--report-only``; ``--x`` of a ``--x/--no-x`` pair)."""
    long = [o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")]
    return (long or action.option_strings)[0]


def compare_options(parser: argparse.ArgumentParser | None) -> list[dict[str, Any]]:
    """The options of ``tuneforge compare`` (its ``parser``) a form shows: ``[{"name", "flag",
    "kind", "choices", "default", "help", "repeatable", "required"}]`` (``--out`` left out;
    none without a parser)."""
    options = []
    for action in parser._actions if parser is not None else []:
        if action.dest in UI_SETS or not action.option_strings:
            continue
        default = action.default if action.default is not argparse.SUPPRESS else None
        options.append(
            {
                "name": action.dest,
                "flag": _flag(action),
                "kind": _kind(action),
                "choices": list(action.choices) if action.choices else None,
                "default": default if not isinstance(default, Path) else str(default),
                "help": (action.help or "").replace("%%", "%"),
                "repeatable": isinstance(action, argparse._AppendAction),
                "required": action.required,
            }
        )
    return options


def compare_argv(
    parser: argparse.ArgumentParser | None, out: Path, values: dict[str, Any]
) -> list[str]:
    """The ``compare`` command line for the form's values (an empty box: left out).

    Raises:
        ConfigError: an option the command does not have, or a value not among its choices.
    """
    if parser is None:
        raise ConfigError("this server was started without the compare command's options")
    options = {option["name"]: option for option in compare_options(parser)}
    argv = ["compare", "--out", str(out)]
    for name, value in values.items():
        option = options.get(name)
        if option is None:
            raise ConfigError(f"compare has no option {name!r}")
        if option["kind"] == "bool":
            if value is True:
                argv.append(option["flag"])
            elif value is False and option["default"] is True:  # a --x/--no-x pair
                argv.append("--no-" + option["flag"].removeprefix("--"))
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            text = str(item).strip() if item is not None else ""
            if not text:
                continue
            if option["choices"] and text not in [str(c) for c in option["choices"]]:
                choices = ", ".join(str(c) for c in option["choices"])
                raise ConfigError(f"{option['flag']}: {text!r} is not one of {choices}")
            argv += [option["flag"], text]
    return argv


def report_entry(state: UiState, folder: Path) -> dict[str, Any]:
    """A comparison folder as the page lists it."""
    job = state.jobs.get("compare", folder.name)
    return {
        "name": folder.name,
        "folder": str(folder),
        "running": bool(job and job.running),
        "exit_code": job.exit_code if job else None,
        "has_report": (folder / "report.html").is_file(),
        "log": log_tail(log_path(state, "compare", folder.name), 3000),
    }


def build_router() -> APIRouter:
    """The routes under ``/ui/api`` for the compare page (auth is added by the caller)."""
    router = APIRouter()

    def folder_of(state: UiState, name: str) -> Path:
        try:
            return state.runs / COMPARE_FOLDER / checked_name(name, "comparison")
        except ConfigError as err:
            raise ApiError(422, str(err), "invalid_name", "name") from err

    @router.get("/compare/options")
    async def options(request: Request) -> dict:
        return {"options": compare_options(request.app.state.ui.settings.compare_parser)}

    @router.get("/compare/reports")
    async def reports(request: Request) -> dict:
        state: UiState = request.app.state.ui
        root = state.runs / COMPARE_FOLDER
        names = {job.name for job in state.jobs.of_kind("compare")}
        if root.is_dir():
            names |= {folder.name for folder in root.iterdir() if folder.is_dir()}
        return {"reports": [report_entry(state, root / name) for name in sorted(names)]}

    @router.post("/compare/start")
    def start(body: dict, request: Request) -> dict:
        state: UiState = request.app.state.ui
        out = folder_of(state, str(body.get("name") or ""))
        try:
            parser = state.settings.compare_parser
            argv = compare_argv(parser, out, body.get("options") or {})
            state.jobs.start("compare", out.name, argv, log_path(state, "compare", out.name))
        except ConfigError as err:
            raise ApiError(422, str(err), "invalid_option") from err
        return {"name": out.name, "command": "tuneforge " + " ".join(argv)}

    @router.post("/compare/{name}/stop")
    async def stop(name: str, request: Request) -> dict:
        state: UiState = request.app.state.ui
        if not state.jobs.stop("compare", folder_of(state, name).name):
            raise ApiError(409, f"comparison {name!r} is not running", code="not_running")
        return {"name": name, "signal": "SIGTERM"}

    @router.get("/compare/{name}/report")
    async def report(name: str, request: Request) -> FileResponse:
        html = folder_of(request.app.state.ui, name) / "report.html"
        if not html.is_file():
            raise ApiError(404, f"comparison {name!r} has no report.html yet", "no_report")
        return FileResponse(html, media_type="text/html")

    return router
