"""Evaluate and compare: metrics with 95% intervals, the fine-tuning vs retrieval comparison
(arms × tasks, on the bundled tasks or the user's documents and questions), reports.

    from tuneforge.evaluate import evaluate, load_eval_data, compare, write_report
    result = evaluate(model, tokenizer, load_eval_data("qa.jsonl"), ["contains_answer", "latency"])
    comparison = compare("runs/compare", budget="quick")
    write_report(comparison, "runs/compare")   # report.md + self-contained report.html

Heavy modules (compare, plots) are imported on use, so ``import tuneforge.evaluate`` stays light.
"""

from tuneforge.evaluate.intervals import (
    Interval,
    bootstrap_interval,
    questions_needed,
    wilson_interval,
)
from tuneforge.evaluate.metrics import (
    JsonScore,
    LatencyStats,
    PerplexityResult,
    RefusalScores,
    citation_correct,
    contains_answer,
    exact_match,
    field_accuracy,
    latency_stats,
    normalize_answer,
    parse_json_reply,
    perplexity,
    refusal_scores,
    retrieval_hit,
    schema_errors,
    score_json,
)
from tuneforge.evaluate.recommendation import recommendation
from tuneforge.evaluate.report import render_html, render_markdown, write_report
from tuneforge.evaluate.results import (
    ARMS,
    ArmResult,
    Comparison,
    ForgettingRow,
    LossCurve,
    UpdateCost,
    load_comparison,
    save_comparison,
)
from tuneforge.evaluate.runner import METRICS, EvalResult, Response, evaluate, load_eval_data
from tuneforge.rag.replies import is_refusal, parse_citations


def compare(*args, **kwargs):
    """Run the comparison of arms × tasks; see :func:`tuneforge.evaluate.compare.compare`."""
    from tuneforge.evaluate.compare import compare as run

    return run(*args, **kwargs)


__all__ = [
    "ARMS",
    "METRICS",
    "ArmResult",
    "Comparison",
    "EvalResult",
    "ForgettingRow",
    "Interval",
    "JsonScore",
    "LatencyStats",
    "LossCurve",
    "PerplexityResult",
    "RefusalScores",
    "Response",
    "UpdateCost",
    "bootstrap_interval",
    "citation_correct",
    "compare",
    "contains_answer",
    "evaluate",
    "exact_match",
    "field_accuracy",
    "is_refusal",
    "latency_stats",
    "load_comparison",
    "load_eval_data",
    "normalize_answer",
    "parse_citations",
    "parse_json_reply",
    "perplexity",
    "questions_needed",
    "recommendation",
    "refusal_scores",
    "render_html",
    "render_markdown",
    "retrieval_hit",
    "save_comparison",
    "schema_errors",
    "score_json",
    "wilson_interval",
    "write_report",
]
