"""The report's recommendation, chosen by rule from measured rates and their 95% intervals.

An arm is named the winner of a comparison only when its interval lies wholly above (or, for a
rate where lower is better, below) the interval of every other arm compared; otherwise the line
says the data set is too small to tell, and roughly how many questions would be needed to tell
the two leading rates apart (:func:`tuneforge.evaluate.intervals.questions_needed`). Twenty
questions give intervals about ±20 points wide, so a 5-point difference on them is never called
a win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuneforge.evaluate.intervals import Interval, proportion_interval, questions_needed
from tuneforge.evaluate.results import ARMS, Comparison
from tuneforge.evaluate.runner import RATE_COUNTS

LEVERS = {
    "base": "the base model alone",
    "base+rag": "retrieval",
    "fine-tuned": "fine-tuning",
    "fine-tuned+rag": "fine-tuning plus retrieval",
    "raft+rag": "RAFT fine-tuning plus retrieval",
    "fine-tuned+dpo": "fine-tuning then preference tuning (DPO)",
    "base+constrained": "constrained decoding",
    "fine-tuned+constrained": "fine-tuning plus constrained decoding",
}
"""What each arm stands for in a sentence."""

NEEDED_FORMULA = (
    "the count at which the two Wilson intervals stop overlapping; away from 0% and 100%, "
    "n ≈ (1.96·(√(p₁(1−p₁)) + √(p₂(1−p₂))) / (p₁ − p₂))²"
)
"""How the questions-needed count is found, as the report states it."""


@dataclass(frozen=True)
class Estimate:
    """One arm's rate with its interval."""

    arm: str
    value: float
    interval: Interval

    def text(self) -> str:
        """``62% [41–79%]``."""
        return f"{self.arm} {format_rate(self.value, self.interval)}"


def format_rate(value: float, interval: Interval | None = None) -> str:
    """``62%``, or ``62% [41–79%]`` with an interval."""
    if math.isnan(value):
        return "n/a"
    if interval is None or math.isnan(interval.low):
        return f"{value:.0%}"
    return f"{value:.0%} [{interval.low * 100:.0f}–{interval.high:.0%}]"


def estimate(comparison: Comparison, arm: str, task: str, metric: str) -> Estimate | None:
    """``arm``'s held-out ``metric`` on ``task`` with its interval; None when not measured.

    A result saved without intervals gets the Wilson interval of its rate and count.
    """
    value = comparison.metric(arm, task, metric)
    if math.isnan(value):
        return None
    interval = comparison.interval(arm, task, metric)
    if interval is None:
        count = comparison.metric(arm, task, RATE_COUNTS.get(metric, f"n_{metric}"))
        if math.isnan(count):
            return None
        interval = proportion_interval(value, int(count))
    return Estimate(arm, value, interval)


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing arms on one rate.

    Attributes:
        best: the arm with the best value.
        runner_up: the best of the others (None when only one arm was measured).
        separated: the best arm's interval clears every other arm's.
        needed: questions per arm to separate the best and the runner-up (None when
            separated, equal, or not measurable).
    """

    best: Estimate
    runner_up: Estimate | None
    separated: bool
    needed: int | None


def decide(estimates: list[Estimate], higher_is_better: bool = True) -> Verdict | None:
    """Compare arms on one rate: the best, the runner-up, and whether intervals separate them.

    Ties on the value go to the simpler arm (earlier in :data:`ARMS`).
    """
    if not estimates:
        return None
    sign = 1 if higher_is_better else -1
    order = sorted(estimates, key=lambda e: (-sign * e.value, ARMS.index(e.arm)))
    best, others = order[0], order[1:]
    if not others:
        return Verdict(best, None, False, None)
    if higher_is_better:
        separated = all(best.interval.separates_above(o.interval) for o in others)
    else:
        separated = all(o.interval.separates_above(best.interval) for o in others)
    runner_up = others[0]
    needed = None if separated else questions_needed(best.value, runner_up.value)
    return Verdict(best, runner_up, separated, needed)


def too_few(verdict: Verdict, what: str) -> str:
    """The sentence for a verdict whose intervals overlap."""
    best, runner = verdict.best, verdict.runner_up
    n = best.interval.n
    if verdict.needed is None:
        return (
            f"{what}: no difference between {best.arm} and {runner.arm} "
            f"({format_rate(best.value)} each on {n} questions)"
        )
    return (
        f"{what}: too few questions to tell {best.text()} from {runner.text()} "
        f"({n} questions; the 95% intervals overlap); telling a difference of this size apart "
        f"needs about {verdict.needed:,} questions per arm*"
    )


def _compare_all(
    comparison: Comparison, task: str, metric: str, label: str, what: str
) -> str | None:
    estimates = [e for arm in ARMS if (e := estimate(comparison, arm, task, metric))]
    verdict = decide(estimates)
    if verdict is None or verdict.runner_up is None:
        return None
    if not verdict.separated:
        return too_few(verdict, what)
    return (
        f"{what}: use {LEVERS[verdict.best.arm]} ({verdict.best.text()} {label} vs next best "
        f"{verdict.runner_up.text()}, {verdict.best.interval.n} held-out questions)"
    )


def _format_part(comparison: Comparison) -> str:
    tuned = estimate(comparison, "fine-tuned", "json", "schema_valid")
    untuned = [
        e
        for arm in ("base", "base+rag")
        if (e := estimate(comparison, arm, "json", "schema_valid"))
    ]
    if tuned is None or not untuned:
        return "format: not measured (give compare --train FILE --schema FILE)"
    best = max(untuned, key=lambda e: e.value)
    verdict = decide([tuned, best])
    if not verdict.separated:
        return too_few(verdict, "format")
    if verdict.best.arm == "fine-tuned":
        return f"fine-tune for format ({tuned.text()} vs {best.text()} schema-valid)"
    return f"no need to fine-tune for format ({best.text()} vs {tuned.text()} schema-valid)"


def _constrained_part(comparison: Comparison) -> str | None:
    """With the constrained arms measured: the grammar makes every reply schema-valid, so does
    fine-tuning still buy field accuracy? base+constrained against the better fine-tuned arm
    on field accuracy. None when base+constrained was not run."""
    base = estimate(comparison, "base+constrained", "json", "field_accuracy")
    valid = estimate(comparison, "base+constrained", "json", "schema_valid")
    if base is None or valid is None:
        return None
    given = f"constrained decoding gives the base {format_rate(valid.value, valid.interval)}"
    unconstrained = estimate(comparison, "fine-tuned", "json", "schema_valid")
    if unconstrained is not None:
        alone = format_rate(unconstrained.value, unconstrained.interval)
        given += f" schema-valid replies (the fine-tune alone {alone})"
    else:
        given += " schema-valid replies"
    tuned = [
        e
        for arm in ("fine-tuned", "fine-tuned+constrained")
        if (e := estimate(comparison, arm, "json", "field_accuracy"))
    ]
    if not tuned:
        return f"format: {given}; no fine-tune measured"
    verdict = decide([base, max(tuned, key=lambda e: e.value)])
    if not verdict.separated:
        return f"format: {given}; " + too_few(verdict, "the fields' content")
    if verdict.best.arm == "base+constrained":
        return (
            f"format: no need to fine-tune: {given}, and its fields are more accurate "
            f"({verdict.best.text()} vs {verdict.runner_up.text()} field accuracy)"
        )
    return (
        f"format: {given}; fine-tune for the content ({verdict.best.text()} field accuracy vs "
        f"{base.text()})"
    )


def _preference_part(comparison: Comparison) -> str | None:
    """DPO after the supervised fine-tune against that fine-tune alone, on field accuracy (the
    content of the JSON; both are usually schema-valid). None when DPO was not run."""
    dpo = estimate(comparison, "fine-tuned+dpo", "json", "field_accuracy")
    sft = estimate(comparison, "fine-tuned", "json", "field_accuracy")
    if dpo is None or sft is None:
        return None
    verdict = decide([sft, dpo])
    if not verdict.separated:
        return too_few(verdict, "preference tuning (field accuracy)")
    if verdict.best.arm == "fine-tuned+dpo":
        return f"preference tuning helps: {dpo.text()} vs {sft.text()} field accuracy"
    return f"preference tuning does not help here: {dpo.text()} vs {sft.text()} field accuracy"


def _reading_part(comparison: Comparison) -> str:
    """RAFT+RAG against base+RAG on citing the right source and refusing the unanswerable."""
    parts = []
    for metric, label in (("citation_correct", "citation-correct"), ("refusal_rate", "refusal")):
        raft = estimate(comparison, "raft+rag", "knowledge", metric)
        rag = estimate(comparison, "base+rag", "knowledge", metric)
        if raft is None or rag is None:
            continue
        verdict = decide([raft, rag])
        if verdict.separated:
            parts.append(f"{label}: {verdict.best.text()} beats {verdict.runner_up.text()}")
        else:
            parts.append(too_few(verdict, label))
    return "; ".join(parts)


def _memorised_part(comparison: Comparison) -> str | None:
    """What the Q/A fine-tune memorised against what it generalised."""
    trained = comparison.metric("fine-tuned", "knowledge", "contains_answer", split="trained")
    held = estimate(comparison, "fine-tuned", "knowledge", "contains_answer")
    if math.isnan(trained) or held is None:
        return None
    interval = comparison.interval("fine-tuned", "knowledge", "contains_answer", split="trained")
    return (
        f"the Q/A fine-tune answers {format_rate(trained, interval)} of questions it was trained "
        f"on and {format_rate(held.value, held.interval)} of held-out ones"
    )


def recommendation(comparison: Comparison) -> str:
    """One paragraph chosen by rule from the held-out rates and their intervals.

    Facts: every arm on contains-answer (knowledge task). Reading sources: RAFT+RAG against
    base+RAG on citation-correct and refusal. Format: the fine-tune against the better untuned
    arm on schema validity; then, schema validity given by constrained decoding, base+constrained
    against the fine-tuned arms on field accuracy. Both: every arm on correct-and-valid (combined task). Then what the
    Q/A fine-tune memorised, and the cost to update a fact. A lever is named only where the
    intervals separate; otherwise the part says the data set is too small and how many
    questions would tell.
    """
    parts = [
        _compare_all(comparison, "knowledge", "contains_answer", "contains-answer", "facts"),
        _reading_part(comparison),
        _constrained_part(comparison) or _format_part(comparison),
        _preference_part(comparison),
        _compare_all(
            comparison,
            "combined",
            "correct_and_valid",
            "correct and schema-valid",
            "facts in a strict format",
        ),
        _memorised_part(comparison),
    ]
    cost = comparison.update_cost
    if cost is not None and cost.reingest_seconds > 0 and not math.isnan(cost.retrain_seconds):
        ratio = cost.retrain_seconds / cost.reingest_seconds
        parts.append(
            f"updating a fact costs {_secs(cost.reingest_seconds)} by re-ingest vs "
            f"{_secs(cost.retrain_seconds)} by re-training ({ratio:.0f}×)"
        )
    line = "Recommendation: " + "; ".join(part for part in parts if part) + "."
    if "questions per arm*" in line:
        line += f" (*{NEEDED_FORMULA}.)"
    return line


def _secs(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"
