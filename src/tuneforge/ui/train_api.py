"""The training page's API: the form's fields, the memory plan, start / stop / resume, runs.

A run starts as ``python -m tuneforge train --config RUNS/.ui/train-NAME.yaml`` (the form's
config, written as YAML), so it is an ordinary run folder ``RUNS/NAME``; stop sends SIGTERM
(checkpoint, exit 143) and resume runs ``tuneforge train --config RUNS/NAME/config.yaml
--resume``, the command a terminal would use.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.serve.errors import ApiError
from tuneforge.ui.runs import log_path, metrics_since, run_detail, run_entry, run_names
from tuneforge.ui.settings import UI_FOLDER, UiState, checked_name
from tuneforge.ui.training_form import FieldError, config_from_form, form_schema


def _state(request: Request) -> UiState:
    return request.app.state.ui


def _config(state: UiState, body: dict[str, Any]):
    """The config of a form submission ``{"name", "values"}``; 422 naming the field if not."""
    name = body.get("name") or "run"
    try:
        checked_name(name)
    except ConfigError as err:
        raise ApiError(422, str(err), code="invalid_config", param="name") from err
    values = body.get("values") or {}
    if not isinstance(values, dict):
        raise ApiError(422, "values: expected an object of field: value", code="invalid_config")
    try:
        return name, config_from_form(values, state.runs / name)
    except FieldError as err:
        raise ApiError(422, str(err), code="invalid_config", param=err.field) from err


def _known_run(state: UiState, name: str) -> str:
    if name not in run_names(state):
        raise ApiError(404, f"no run {name!r} in {state.runs}", code="run_not_found")
    return name


def plan_of(config) -> dict[str, Any]:
    """The memory plan of a config, as ``tuneforge plan`` and ``tuneforge train`` print it."""
    from tuneforge.train.planning import plan_for_run, planned_device_type

    device_type = planned_device_type(config.device)
    plan = plan_for_run(config, device_type=device_type)
    return {
        "device_type": device_type,
        "total_bytes": plan.total,
        "components": plan.components,
        "table": plan.table(),
    }


def build_router() -> APIRouter:
    """The routes under ``/ui/api`` for the training page (auth is added by the caller)."""
    router = APIRouter()

    @router.get("/config-schema")
    async def config_schema(request: Request) -> dict:
        schema = form_schema()
        schema["runs"] = str(_state(request).runs)
        schema["model"] = _state(request).settings.model
        return schema

    @router.post("/train/plan")
    def plan(body: dict, request: Request) -> dict:
        _, config = _config(_state(request), body)
        try:
            return plan_of(config)
        except TuneforgeError as err:
            raise ApiError(422, str(err), code="invalid_config", param="model") from err

    @router.post("/train/start")
    def start(body: dict, request: Request) -> dict:
        from tuneforge.train.config import dump_config
        from tuneforge.train.run import check_run_dir

        state = _state(request)
        name, config = _config(state, body)
        if not config.data.path.strip():
            raise ApiError(
                422, "no data given: enter a data file", code="invalid_config", param="data.path"
            )
        try:
            check_run_dir(config)
        except TuneforgeError as err:
            raise ApiError(409, str(err), code="run_exists", param="name") from err
        config_file = state.runs / UI_FOLDER / f"train-{name}.yaml"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(dump_config(config), encoding="utf-8")
        argv = ["train", "--config", str(config_file)]
        try:
            state.jobs.start("train", name, argv, log_path(state, "train", name))
        except ConfigError as err:
            raise ApiError(409, str(err), code="run_running", param="name") from err
        return {"name": name, "command": "tuneforge " + " ".join(argv)}

    @router.post("/runs/{name}/stop")
    async def stop(name: str, request: Request) -> dict:
        state = _state(request)
        if not state.jobs.stop("train", _known_run(state, name)):
            raise ApiError(409, f"run {name!r} is not running in this UI", code="not_running")
        return {"name": name, "signal": "SIGTERM"}

    @router.post("/runs/{name}/resume")
    def resume(name: str, request: Request) -> dict:
        state = _state(request)
        config_file = state.runs / _known_run(state, name) / "config.yaml"
        argv = ["train", "--config", str(config_file), "--resume", "--no-progress"]
        try:
            state.jobs.start("train", name, argv, log_path(state, "train", name))
        except ConfigError as err:
            raise ApiError(409, str(err), code="run_running", param="name") from err
        return {"name": name, "command": "tuneforge " + " ".join(argv)}

    @router.get("/runs")
    async def runs(request: Request) -> dict:
        state = _state(request)
        return {"runs": [run_entry(state, name) for name in run_names(state)]}

    @router.get("/runs/{name}")
    async def run(name: str, request: Request) -> dict:
        state = _state(request)
        return run_detail(state, _known_run(state, name))

    @router.get("/runs/{name}/metrics")
    async def metrics(name: str, request: Request, since: int = 0) -> dict:
        state = _state(request)
        return metrics_since(state, _known_run(state, name), max(0, since))

    return router
