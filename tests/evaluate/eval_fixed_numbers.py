"""A comparison with fixed, hand-picked numbers, for report tests."""

from __future__ import annotations

from tuneforge.evaluate.results import ArmResult, Comparison, ForgettingRow, LossCurve, UpdateCost

KNOWLEDGE = {
    "base": (0.10, 0.0, 0.90, 1.0),
    "base+rag": (0.80, 0.70, 0.25, 1.6),
    "fine-tuned": (0.30, 0.0, 0.95, 1.1),
    "fine-tuned+rag": (0.78, 0.60, 0.30, 1.7),
}
JSON = {"base": 0.10, "base+rag": 0.20, "fine-tuned": 0.90, "fine-tuned+rag": 0.85}


def fixed_comparison() -> Comparison:
    arms = []
    for arm, (contains, cites, halluc, latency) in KNOWLEDGE.items():
        metrics = {
            "contains_answer": contains,
            "citation_correct": cites,
            "hallucination_rate": halluc,
            "refusal_rate": 1 - halluc,
            "latency_mean_s": latency,
        }
        arms.append(
            ArmResult(
                arm,
                "knowledge",
                metrics,
                [{"question": "Q?", "reply": "<b>A</b>", "verdict": "ok"}],
            )
        )
        arms.append(
            ArmResult(
                arm,
                "json",
                {"schema_valid": JSON[arm], "valid_json": JSON[arm], "latency_mean_s": 0.5},
            )
        )
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
