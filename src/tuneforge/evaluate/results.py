"""What a comparison measured: plain dataclasses that round-trip through ``results.json``.

:mod:`tuneforge.evaluate.compare` fills them; :mod:`tuneforge.evaluate.report` only reads them,
so a report can be re-rendered from a saved ``results.json`` without re-running anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.errors import DataError
from tuneforge.evaluate.arms import COMPARE_ARMS, COMPARE_TASKS
from tuneforge.evaluate.intervals import Interval

ARMS = tuple(arm.name for arm in COMPARE_ARMS)
"""The arms' names, in report order (see :mod:`tuneforge.evaluate.arms`)."""

TASKS = tuple(task.name for task in COMPARE_TASKS)
"""The tasks' names (see :mod:`tuneforge.evaluate.arms`)."""

SPLITS = ("held-out", "trained")
"""Which questions an arm was asked: ``held-out`` (no arm was trained on them; every arm) or
``trained`` (the fine-tuned arms' own training questions: what they memorised)."""


@dataclass
class ArmResult:
    """One arm on one task.

    Attributes:
        arm: one of :data:`ARMS`.
        task: one of :data:`TASKS`.
        metrics: metric name -> value. Rates are fractions in [0, 1]; ``*_s`` are seconds.
            knowledge: ``contains_answer``, ``exact_match``, ``citation_correct``,
            ``refusal_rate``, ``hallucination_rate``, ``over_refusal_rate``, ``latency_mean_s``,
            ``latency_p95_s``; json: ``valid_json``, ``schema_valid``, ``field_accuracy``,
            ``latency_mean_s``, ``latency_p95_s``.
        samples: a few replies to show in the report (``question``, ``reply``, ``verdict``).
        split: which questions: one of :data:`SPLITS`.
        intervals: rate name -> its 95% interval and count.
    """

    arm: str
    task: str
    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)
    split: str = "held-out"
    intervals: dict[str, Interval] = field(default_factory=dict)


@dataclass
class UpdateCost:
    """The cost to change one fact.

    Attributes:
        fact: which document was changed, and how (for the report).
        reingest_seconds: wall time to re-ingest the changed document into the store.
        retrain_seconds: wall time of the knowledge fine-tune, which an update has to repeat.
        reingest_recalled: the base+RAG arm answers with the new value after re-ingesting
            (None when not checked).
    """

    fact: str
    reingest_seconds: float
    retrain_seconds: float
    reingest_recalled: bool | None = None


@dataclass
class ForgettingRow:
    """General ability of the base model and of the models fine-tuned from it.

    Attributes:
        method: ``base``, ``full`` or ``lora``.
        steps: optimizer steps of the fine-tune (0 for base).
        general_perplexity: token-weighted perplexity on held-out general text.
        general_accuracy: contains-answer accuracy on the general question set, in [0, 1].
    """

    method: str
    steps: int
    general_perplexity: float
    general_accuracy: float


@dataclass
class LossCurve:
    """Training loss of one run by optimizer step."""

    run: str
    steps: list[int]
    losses: list[float]


@dataclass
class Comparison:
    """Everything ``tuneforge compare`` measured.

    Attributes:
        model: the base model reference.
        budget: ``quick`` or ``full``.
        settings: the resolved settings (steps, question counts, methods), for reproduction.
        arms: one :class:`ArmResult` per arm and task.
        update_cost: the cost to update one fact.
        forgetting: base, full and LoRA fine-tunes at the same step count.
        loss_curves: the training runs' losses.
        seconds_total: wall time of the whole comparison.
    """

    model: str
    budget: str
    settings: dict
    arms: list[ArmResult]
    update_cost: UpdateCost | None
    forgetting: list[ForgettingRow]
    loss_curves: list[LossCurve]
    seconds_total: float = math.nan

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The arms this comparison ran, in report order (:data:`ARMS`): the report's columns
        (the constrained arms, for one, run only where there is a form task)."""
        ran = {result.arm for result in self.arms}
        return tuple(arm for arm in ARMS if arm in ran)

    def result(self, arm: str, task: str, split: str = "held-out") -> ArmResult | None:
        """The result of ``arm`` on ``task``'s ``split`` questions; None when not run."""
        for result in self.arms:
            if (result.arm, result.task, result.split) == (arm, task, split):
                return result
        return None

    def metric(self, arm: str, task: str, name: str, split: str = "held-out") -> float:
        """The value of ``name`` for ``arm`` on ``task``; ``nan`` when not measured."""
        result = self.result(arm, task, split)
        return math.nan if result is None else float(result.metrics.get(name, math.nan))

    def interval(self, arm: str, task: str, name: str, split: str = "held-out") -> Interval | None:
        """The 95% interval of rate ``name`` for ``arm`` on ``task``; None when not measured."""
        result = self.result(arm, task, split)
        return None if result is None else result.intervals.get(name)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``nan`` becomes ``None``)."""
        return _nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> Comparison:
        """Rebuild from :meth:`to_dict` output (``None`` metrics come back as ``nan``)."""
        try:
            cost = data.get("update_cost")
            return cls(
                model=data["model"],
                budget=data["budget"],
                settings=dict(data.get("settings", {})),
                arms=[
                    ArmResult(
                        arm=a["arm"],
                        task=a["task"],
                        metrics={k: _num(v) for k, v in a["metrics"].items()},
                        samples=list(a.get("samples", [])),
                        split=a.get("split", "held-out"),
                        intervals={
                            k: Interval(_num(v["low"]), _num(v["high"]), int(v["n"]), v["method"])
                            for k, v in a.get("intervals", {}).items()
                        },
                    )
                    for a in data["arms"]
                ],
                update_cost=UpdateCost(
                    **{k: _num(v) if k.endswith("seconds") else v for k, v in cost.items()}
                )
                if cost
                else None,
                forgetting=[
                    ForgettingRow(
                        method=f["method"],
                        steps=int(f["steps"]),
                        general_perplexity=_num(f["general_perplexity"]),
                        general_accuracy=_num(f["general_accuracy"]),
                    )
                    for f in data.get("forgetting", [])
                ],
                loss_curves=[LossCurve(**c) for c in data.get("loss_curves", [])],
                seconds_total=_num(data.get("seconds_total")),
            )
        except (KeyError, TypeError) as err:
            raise DataError(
                f"results.json: missing or malformed field {err}; re-run `tuneforge compare`"
            ) from err


def save_comparison(comparison: Comparison, path: Path) -> None:
    """Write ``results.json`` atomically."""
    from tuneforge.atomic import write_json

    write_json(path, comparison.to_dict())


def load_comparison(path: Path) -> Comparison:
    """Read a ``results.json`` written by :func:`save_comparison`."""
    path = Path(path)
    try:
        return Comparison.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file; run `tuneforge compare --out DIR` first") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from err


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value
