"""A comparison with fixed, hand-picked numbers and counts, for report tests."""

from __future__ import annotations

from tuneforge.evaluate.intervals import proportion_interval
from tuneforge.evaluate.results import ArmResult, Comparison, ForgettingRow, LossCurve, UpdateCost

N_KNOWLEDGE, N_UNANSWERABLE, N_JSON, N_COMBINED, N_TRAINED = 100, 40, 60, 100, 20

# arm: (contains answer, citation correct, hallucination rate, latency s)
KNOWLEDGE = {
    "base": (0.10, None, 0.90, 1.0),
    "base+rag": (0.80, 0.70, 0.25, 1.6),
    "fine-tuned": (0.30, None, 0.95, 1.1),
    "fine-tuned+rag": (0.78, 0.60, 0.30, 1.7),
    "raft+rag": (0.95, 0.90, 0.10, 1.8),
}
JSON = {"base": 0.10, "base+rag": 0.20, "fine-tuned": 0.90, "fine-tuned+rag": 0.85}
COMBINED = {
    "base": 0.0,
    "base+rag": 0.05,
    "fine-tuned": 0.10,
    "fine-tuned+rag": 0.20,
    "raft+rag": 0.70,
}


def rates(values: dict[str, tuple[float, int]]) -> tuple[dict, dict]:
    """Metrics (value and ``n_`` count) and Wilson intervals from ``name: (value, n)``."""
    metrics, intervals = {}, {}
    for name, (value, n) in values.items():
        metrics[name] = value
        metrics[f"n_{name}"] = float(n)
        intervals[name] = proportion_interval(value, n)
    return metrics, intervals


def knowledge_result(arm: str, contains: float, cites, halluc: float, latency: float) -> ArmResult:
    values = {"contains_answer": (contains, N_KNOWLEDGE)}
    if cites is not None:
        values["citation_correct"] = (cites, N_KNOWLEDGE)
    metrics, intervals = rates(values)
    refusal = proportion_interval(1 - halluc, N_UNANSWERABLE)
    metrics.update(
        hallucination_rate=halluc,
        refusal_rate=1 - halluc,
        n_unanswerable=float(N_UNANSWERABLE),
        latency_mean_s=latency,
    )
    intervals["refusal_rate"] = refusal
    intervals["hallucination_rate"] = proportion_interval(halluc, N_UNANSWERABLE)
    return ArmResult(
        arm,
        "knowledge",
        metrics,
        [{"question": "Q?", "reply": "<b>A</b>", "verdict": "ok"}],
        intervals=intervals,
    )


def fixed_comparison() -> Comparison:
    arms = [knowledge_result(arm, *numbers) for arm, numbers in KNOWLEDGE.items()]
    for arm, valid in JSON.items():
        metrics, intervals = rates({"schema_valid": (valid, N_JSON), "valid_json": (valid, N_JSON)})
        arms.append(
            ArmResult(arm, "json", {**metrics, "latency_mean_s": 0.5}, [], "held-out", intervals)
        )
    for arm, right in COMBINED.items():
        metrics, intervals = rates({"correct_and_valid": (right, N_COMBINED)})
        arms.append(ArmResult(arm, "combined", metrics, [], "held-out", intervals))
    metrics, intervals = rates({"contains_answer": (0.90, N_TRAINED)})
    arms.append(ArmResult("fine-tuned", "knowledge", metrics, [], "trained", intervals))
    return Comparison(
        model="default",
        budget="quick",
        settings={"steps": 30},
        arms=arms,
        update_cost=UpdateCost(
            "kb/a.md: one date changed", reingest_seconds=0.5, retrain_seconds=150.0
        ),
        forgetting=[
            ForgettingRow("base", 0, 10.0, 0.9),
            ForgettingRow("full", 30, 14.0, 0.6),
            ForgettingRow("lora", 30, 10.5, 0.85),
        ],
        loss_curves=[LossCurve("knowledge-lora", [1, 2, 3], [2.0, 1.5, 1.2])],
        seconds_total=300.0,
    )


def with_rate(comparison: Comparison, arm: str, task: str, name: str, value: float, n: int):
    """Set one arm's rate and count (and its interval) in place; returns the comparison."""
    result = comparison.result(arm, task)
    result.metrics[name] = value
    result.metrics[f"n_{name}"] = float(n)
    result.intervals[name] = proportion_interval(value, n)
    return comparison
