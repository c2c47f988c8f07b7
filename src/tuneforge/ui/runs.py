"""Run folders as the UI lists them: status, config, summary, metrics and the job's log.

A run folder is the one ``tuneforge train`` writes (``config.yaml``, ``metrics.jsonl``,
``checkpoints/``, ``adapter/`` or ``model/``, ``summary.json``); the UI reads nothing else, so
runs started from a terminal are listed beside the UI's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.train.metrics import read_metrics
from tuneforge.ui.jobs import Job, log_tail
from tuneforge.ui.settings import UI_FOLDER, UiState


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def run_status(folder: Path, job: Job | None) -> str:
    """``starting`` / ``running`` (a UI job, before / after the folder has its config),
    ``finished`` (``summary.json``), ``stopped`` (checkpoints, no summary: resumable),
    ``failed`` (the UI's job exited with an error before any checkpoint), or ``incomplete``."""
    if job is not None and job.running:
        return "running" if (folder / "config.yaml").exists() else "starting"
    if (folder / "summary.json").exists():
        return "finished"
    if any((folder / "checkpoints").glob("step-*")):
        return "stopped"
    if job is not None and job.exit_code:
        return "failed"
    return "incomplete"


def log_path(state: UiState, kind: str, name: str) -> Path:
    """The log file of a UI job."""
    return state.runs / UI_FOLDER / f"{kind}-{name}.log"


def run_names(state: UiState) -> list[str]:
    """Run folders under the runs folder (those with a ``config.yaml``) and the UI's training
    jobs still starting, by name."""
    names = {job.name for job in state.jobs.of_kind("train")}
    if state.runs.is_dir():
        names |= {
            folder.name
            for folder in state.runs.iterdir()
            if folder.is_dir() and (folder / "config.yaml").is_file()
        }
    return sorted(names)


def run_entry(state: UiState, name: str) -> dict[str, Any]:
    """A run as the runs table shows it: status, summary, config, where its output is."""
    folder = state.runs / name
    job = state.jobs.get("train", name)
    adapter = folder / "adapter"
    return {
        "name": name,
        "folder": str(folder),
        "status": run_status(folder, job),
        "exit_code": job.exit_code if job is not None else None,
        "summary": _read_json(folder / "summary.json"),
        "config": _read_yaml(folder / "config.yaml"),
        "adapter": str(adapter) if (adapter / "adapter_config.json").is_file() else None,
    }


def run_detail(state: UiState, name: str) -> dict[str, Any]:
    """``run_entry`` plus the config as written and the end of the UI job's log."""
    entry = run_entry(state, name)
    config_file = state.runs / name / "config.yaml"
    entry["config_text"] = config_file.read_text(encoding="utf-8") if config_file.exists() else ""
    entry["log"] = log_tail(log_path(state, "train", name))
    return entry


def metrics_since(state: UiState, name: str, since: int) -> dict[str, Any]:
    """The metrics lines after the first ``since`` (the page polls for new points).

    Returns:
        ``{"records": [...], "next": N, "reset": bool, "status": ...}``; ``reset`` is true when
        the file got shorter (a resumed run drops lines logged after its checkpoint): the page
        starts over from ``records``.
    """
    path = state.runs / name / "metrics.jsonl"
    records = read_metrics(path) if path.exists() else []
    reset = since > len(records)
    start = 0 if reset else since
    job = state.jobs.get("train", name)
    return {
        "records": records[start:],
        "next": len(records),
        "reset": reset,
        "status": run_status(state.runs / name, job),
        "log": log_tail(log_path(state, "train", name), 3000),
    }
