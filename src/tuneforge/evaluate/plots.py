"""The report's figures as PNG bytes: loss curves, the arms per metric, forgetting.

Built on ``matplotlib.figure.Figure`` directly (no pyplot), so no global figure state and no
display backend are involved; each function returns the PNG file's bytes.
"""

from __future__ import annotations

import io
import math

from tuneforge.evaluate.results import TASKS, Comparison, ForgettingRow, LossCurve
from tuneforge.evaluate.runner import EVAL_BATCH_SIZE

_ARM_COLORS = {
    "base": "#9e9e9e",
    "base+rag": "#1f77b4",
    "fine-tuned": "#ff7f0e",
    "fine-tuned+rag": "#2ca02c",
    "raft+rag": "#9467bd",
    "fine-tuned+dpo": "#e377c2",
    "base+constrained": "#8c564b",
    "fine-tuned+constrained": "#d62728",
}

ARM_METRICS = [
    ("knowledge", "contains_answer", "knowledge:\ncontains answer ↑"),
    ("knowledge", "citation_correct", "knowledge:\ncitation correct ↑"),
    ("knowledge", "refusal_rate", "unanswerable:\nrefused ↑"),
    ("knowledge", "hallucination_rate", "unanswerable:\nhallucinated ↓"),
    ("json", "schema_valid", "json:\nschema valid ↑"),
    ("json", "field_accuracy", "json:\nfield accuracy ↑"),
    ("combined", "schema_valid", "combined:\nschema valid ↑"),
    ("combined", "correct_and_valid", "combined:\ncorrect and valid ↑"),
]
"""(task, metric, label) shown in the arms chart (held-out questions); all are fractions in
[0, 1], drawn with their 95% intervals as error bars."""


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _zero_if_nan(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def plot_loss_curves(curves: list[LossCurve]) -> bytes:
    """Training loss (nats per token) by optimizer step, one line per run."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4))
    axes = figure.add_subplot()
    for curve in curves:
        axes.plot(curve.steps, curve.losses, marker="o", markersize=3, label=curve.run)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss (nats/token)")
    axes.set_title("Loss curves of the training runs")
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(fontsize=8)
    return _png(figure)


def plot_arms(comparison: Comparison) -> bytes:
    """Grouped bars with 95% error bars: each measured metric of :data:`ARM_METRICS`, one bar
    per arm; below, the mean latency per task."""
    from matplotlib.figure import Figure

    shown = [
        (t, m, label)
        for t, m, label in ARM_METRICS
        if any(not math.isnan(comparison.metric(arm, t, m)) for arm in comparison.arm_names)
    ]
    tasks = [t for t in TASKS if any(comparison.result(arm, t) for arm in comparison.arm_names)]
    figure = Figure(figsize=(12, 7.5))
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 2])
    width = 0.8 / len(comparison.arm_names)
    offset = (len(comparison.arm_names) - 1) / 2
    for index, arm in enumerate(comparison.arm_names):
        values, low, high = [], [], []
        for t, m, _ in shown:
            value = _zero_if_nan(comparison.metric(arm, t, m))
            interval = comparison.interval(arm, t, m)
            values.append(value)
            ok = interval is not None and not math.isnan(interval.low)
            low.append(value - interval.low if ok else 0.0)
            high.append(interval.high - value if ok else 0.0)
        positions = [i + (index - offset) * width for i in range(len(shown))]
        bars = top.bar(
            positions,
            values,
            width,
            yerr=[low, high],
            capsize=2,
            error_kw={"elinewidth": 0.8, "alpha": 0.6},
            label=arm,
            color=_ARM_COLORS[arm],
        )
        top.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=6, padding=1)
    top.set_xticks(range(len(shown)), [label for _, _, label in shown], fontsize=8)
    top.set_ylim(0, 1.3)  # headroom for the legend above 100% bars
    top.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    top.set_ylabel("fraction of held-out questions")
    top.set_title("The arms per metric, with 95% intervals (↑ higher is better, ↓ lower is better)")
    top.legend(fontsize=8, ncols=len(comparison.arm_names), loc="upper center")
    top.grid(axis="y", alpha=0.3)

    for index, arm in enumerate(comparison.arm_names):
        values = [_zero_if_nan(comparison.metric(arm, t, "latency_mean_s")) for t in tasks]
        positions = [i + (index - offset) * width for i in range(len(tasks))]
        bars = bottom.bar(positions, values, width, label=arm, color=_ARM_COLORS[arm])
        bottom.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
    bottom.set_xticks(range(len(tasks)), [f"{t} task" for t in tasks])
    bottom.set_ylabel("seconds per answer (mean)")
    bottom.set_title(f"Latency per answer (questions in batches of {EVAL_BATCH_SIZE})")
    bottom.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def plot_forgetting(rows: list[ForgettingRow]) -> bytes:
    """General perplexity (↓) and general accuracy (↑) for base, full and LoRA fine-tunes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6))
    left, right = figure.subplots(1, 2)
    labels = [
        row.method if row.method == "base" else f"{row.method}\n({row.steps} steps)" for row in rows
    ]
    colors = [
        "#9e9e9e" if row.method == "base" else "#ff7f0e" if row.method == "full" else "#2ca02c"
        for row in rows
    ]
    ppl = [_zero_if_nan(row.general_perplexity) for row in rows]
    acc = [_zero_if_nan(row.general_accuracy) for row in rows]
    bars = left.bar(labels, ppl, color=colors)
    left.bar_label(bars, labels=[f"{v:.1f}" for v in ppl], fontsize=8)
    left.set_title("Perplexity on held-out general text ↓")
    bars = right.bar(labels, acc, color=colors)
    right.bar_label(bars, labels=[f"{v:.0%}" for v in acc], fontsize=8)
    right.set_ylim(0, 1.1)
    right.set_title("Accuracy on general questions ↑")
    for axes in (left, right):
        axes.grid(axis="y", alpha=0.3)
    figure.suptitle("Forgetting: general ability before and after fine-tuning")
    figure.tight_layout()
    return _png(figure)
