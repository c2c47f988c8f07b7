"""The data page's API: what ``tuneforge data inspect`` prints, as data a page can draw.

The file is read, validated and tokenized by ``tuneforge.data.inspection.inspect_data``, the
function behind the command; invalid records are counted and listed by ``file:line`` instead of
stopping at the first, so the page shows every problem at once (the first ten, and the count).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request

from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.serve.errors import ApiError
from tuneforge.ui.settings import UPLOADS_FOLDER, UiState, checked_name
from tuneforge.ui.training_form import DATA_PREFIX, field_of

HISTOGRAM_BINS = 20
# "file:line: problem", as tuneforge.data's readers report an invalid record.
_PROBLEM = re.compile(r"^(?P<file>.*?):(?P<line>\d+): (?P<message>.*)$", re.DOTALL)


def length_histogram(lengths: list[int], bins: int = HISTOGRAM_BINS) -> list[dict[str, int]]:
    """Token lengths counted in at most ``bins`` equal ranges ``[low, high)`` covering the
    shortest to the longest.

    Returns:
        ``[{"low", "high", "count"}]``; empty for no lengths.
    """
    if not lengths:
        return []
    start, stop = min(lengths), max(lengths) + 1
    width = max(1, -(-(stop - start) // bins))  # ceil: every length falls in a bin
    counts = [0] * -(-(stop - start) // width)
    for length in lengths:
        counts[(length - start) // width] += 1
    return [
        {"low": start + i * width, "high": start + (i + 1) * width, "count": count}
        for i, count in enumerate(counts)
    ]


def split_problem(sample: str) -> dict[str, Any]:
    """``"a.jsonl:3: invalid JSON"`` -> ``{"file": "a.jsonl", "line": 3, "message": ...}``;
    a sample without a line number keeps its text as the message."""
    match = _PROBLEM.match(sample)
    if match is None:
        return {"file": None, "line": None, "message": sample}
    return {"file": match["file"], "line": int(match["line"]), "message": match["message"]}


def marked_spans(example: str) -> list[dict[str, Any]]:
    """An example rendered by ``inspection.mark_supervised`` as spans: ``[{"text",
    "supervised"}]``, the supervised (loss-carrying) ones being those between the marks."""
    from tuneforge.data.inspection import CLOSE_MARK, OPEN_MARK

    spans = []
    for i, part in enumerate(example.split(OPEN_MARK)):
        supervised_text, close, rest = part.partition(CLOSE_MARK)
        if i == 0 or not close:  # text before the first mark, or a stray open mark
            spans.append({"text": part, "supervised": False})
            continue
        spans.append({"text": supervised_text, "supervised": True})
        spans.append({"text": rest, "supervised": False})
    return [span for span in spans if span["text"]]


def _data_config(body: dict[str, Any]):
    from tuneforge.data.config import DataConfig
    from tuneforge.tasks.json_orders import resolve_demo_data
    from tuneforge.train.config import read_numbers

    path = str(body.get("path") or "").strip()
    if not path:
        raise ApiError(422, "enter a data file (or upload one)", "invalid_config", "data.path")
    options = {
        name.removeprefix(DATA_PREFIX): value
        for name, value in (body.get("options") or {}).items()
        if not (isinstance(value, str) and not value.strip())  # an empty box: the default
    }
    options.pop("path", None)
    try:
        config = DataConfig(path=resolve_demo_data(path), **read_numbers(options, DataConfig))
    except ConfigError as err:
        raise ApiError(422, str(err), "invalid_config", field_of(str(err))) from err
    except TypeError as err:  # an option DataConfig does not have
        raise ApiError(422, f"data options: {err}", "invalid_config") from err
    return replace(config, skip_invalid=True)  # list every invalid record, not the first


def inspection_data(state: UiState, body: dict[str, Any]) -> dict[str, Any]:
    """The data page's report of ``body`` (``{"path", "model", "options", "example"}``).

    Raises:
        ApiError: 422 for a file or option the data pipeline refuses (its message).
    """
    from tuneforge.data.inspection import inspect_data

    config = _data_config(body)
    model = str(body.get("model") or state.settings.model)
    example = body.get("example") or 0
    if not isinstance(example, int) or example < 0:
        raise ApiError(422, "example: expected a number >= 0", "invalid_config", "example")
    try:
        inspection = inspect_data(config, state.tokenizer(model), example_index=example)
    except TuneforgeError as err:
        raise ApiError(422, str(err), "invalid_data", "data.path") from err
    report = inspection.report
    return {
        "path": config.path,
        "model": model,
        "text": inspection.text(),
        "format": report.format,
        "rows_read": report.rows_read,
        "train_examples": report.train_examples,
        "val_examples": report.val_examples,
        "invalid": {
            "count": report.invalid_skipped,
            "samples": [split_problem(sample) for sample in report.invalid_samples],
        },
        "duplicates_removed": report.duplicates_removed,
        "max_length": report.max_length,
        "percentiles": inspection.percentiles,
        "histogram": length_histogram(report.lengths),
        "touched_by_truncation": inspection.touched_by_truncation,
        "supervised_share": report.supervised_share,
        "packing_efficiency": inspection.packing_efficiency,
        "packed_rows": inspection.packed_rows,
        "example_index": example,
        "example": marked_spans(inspection.example),
    }


def build_router() -> APIRouter:
    """The routes under ``/ui/api`` for the data page (auth is added by the caller)."""
    router = APIRouter()

    @router.post("/data/inspect")
    def inspect(body: dict, request: Request) -> dict:
        return inspection_data(request.app.state.ui, body)

    @router.post("/data/upload")
    async def upload(name: str, request: Request) -> dict:
        """Save the request body as ``RUNS/uploads/NAME`` (the server's body limit applies)."""
        state: UiState = request.app.state.ui
        try:
            checked_name(name, "file")
        except ConfigError as err:
            raise ApiError(422, str(err), "invalid_name", "name") from err
        folder = state.runs / UPLOADS_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        target.write_bytes(await request.body())
        return {"path": str(target), "bytes": target.stat().st_size}

    return router
