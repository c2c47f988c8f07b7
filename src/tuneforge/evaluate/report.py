"""``report.md`` and a self-contained ``report.html`` from a :class:`Comparison`.

The classic "RAG vs fine-tuning" table (adding knowledge, citing sources, teaching a format,
facts in a format, reducing hallucination, cost to update, latency) is filled with measured
numbers, every rate with its 95% interval and its question count, and the recommendation is
chosen by a rule over those numbers and intervals (:mod:`tuneforge.evaluate.recommendation`),
never written by hand: where the intervals overlap it says the data set is too small to tell.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

from tuneforge.evaluate.arms import COMPARE_ARMS, Arm
from tuneforge.evaluate.recommendation import (
    decide,
    estimate,
    format_rate,
    recommendation,
)
from tuneforge.evaluate.results import ARMS, SPLITS, TASKS, Comparison, UpdateCost
from tuneforge.evaluate.runner import EVAL_BATCH_SIZE

MARGIN = 0.05
"""Forgetting: a general-accuracy drop larger than this (5 points) counts as forgetting more."""


@dataclass
class TableRow:
    """One row of the classic table: a label, one cell per arm, the best arm by the row's rule.

    ``best`` names one arm when its interval clears every other's, or the arms still tied
    (``a ≈ b``) when the intervals overlap.
    """

    label: str
    cells: list[str]
    best: str


def _secs(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def _best(values: dict[str, float], higher_is_better: bool) -> str:
    """The best arm; ties go to the simpler arm (earlier in :data:`ARMS`); ``—`` if none measured."""
    measured = {arm: v for arm, v in values.items() if not math.isnan(v)}
    if not measured:
        return "—"
    sign = 1 if higher_is_better else -1
    top = max(sign * v for v in measured.values())
    return next(arm for arm in ARMS if arm in measured and sign * measured[arm] == top)


def _update_cost(arm: Arm, cost: UpdateCost) -> float:
    """Seconds to update one fact for ``arm``."""
    if arm.rag:
        return cost.reingest_seconds  # a store update suffices: the retrieved passage overrides
    if arm.adapter is not None:
        return cost.retrain_seconds  # facts live in the fine-tune: it must be re-trained
    return math.nan  # the base knows no facts to update


def _update_costs(comparison: Comparison) -> dict[str, float]:
    cost = comparison.update_cost
    if cost is None:
        return dict.fromkeys(ARMS, math.nan)
    return {arm.name: _update_cost(arm, cost) for arm in COMPARE_ARMS}


RATE_ROWS = [
    ("Adding knowledge (contains answer, answerable questions)", "knowledge", "contains_answer", True),
    ("Citing the source that holds the answer (citation correct)", "knowledge", "citation_correct", True),
    ("Reducing hallucination (answers to unanswerable questions)", "knowledge", "hallucination_rate", False),
    ("Teaching a format (schema-valid JSON replies)", "json", "schema_valid", True),
    ("Facts in a strict format (correct and schema-valid, combined task)", "combined", "correct_and_valid", True),
]  # fmt: skip
"""(label, task, metric, higher is better) of the classic table's rate rows (held-out)."""


def _rate_row(comparison: Comparison, label: str, task: str, metric: str, higher: bool):
    estimates = {arm: estimate(comparison, arm, task, metric) for arm in comparison.arm_names}
    measured = [e for e in estimates.values() if e is not None]
    if not measured:
        return None
    counts = sorted({e.interval.n for e in measured})
    arrow = "↑" if higher else "↓"
    label = f"{label}, n={'/'.join(str(c) for c in counts)} {arrow}"
    cells = [format_rate(e.value, e.interval) if e else "n/a" for e in estimates.values()]
    verdict = decide(measured, higher)
    best = verdict.best.arm
    if not verdict.separated and verdict.runner_up is not None:
        tied = [
            e.arm
            for e in measured
            if e.arm != best
            and not (
                verdict.best.interval.separates_above(e.interval)
                if higher
                else e.interval.separates_above(verdict.best.interval)
            )
        ]
        best = " ≈ ".join([best, *tied])
    return TableRow(label, cells, best)


def classic_table(comparison: Comparison) -> list[TableRow]:
    """The rows of the classic comparison, one measured cell per arm (held-out questions).

    Rate cells read ``62% [41–79%]`` (value and 95% interval); the label carries the question
    count. A task that was not run (e.g. no form task on the user's data) has no row.
    """
    rows = [
        row
        for label, task, metric, higher in RATE_ROWS
        if (row := _rate_row(comparison, label, task, metric, higher)) is not None
    ]
    costs = _update_costs(comparison)
    rows.append(
        TableRow(
            "Cost to update one fact (wall seconds) ↓",
            [_secs(costs[arm]) for arm in comparison.arm_names],
            _best(costs, higher_is_better=False),
        )
    )
    latency = {
        arm: comparison.metric(arm, "knowledge", "latency_mean_s") for arm in comparison.arm_names
    }
    base = latency["base"]
    cells = []
    for arm in comparison.arm_names:
        added = latency[arm] - base
        suffix = "" if arm == "base" or math.isnan(added) else f" ({added:+.2f})"
        cells.append(_secs(latency[arm]) + suffix)
    rows.append(
        TableRow(
            f"Latency per answer (mean s in batches of {EVAL_BATCH_SIZE}, knowledge task; "
            "added vs base) ↓",
            cells,
            _best(latency, higher_is_better=False),
        )
    )
    return rows


def memorised_rows(comparison: Comparison) -> list[list[str]]:
    """Per fine-tuned arm and task: the headline rate on trained vs held-out questions."""
    from tuneforge.evaluate.arms import COMPARE_TASKS

    rows = []
    for task in COMPARE_TASKS:
        if not task.memorised:
            continue
        for arm in comparison.arm_names:
            trained = comparison.result(arm, task.name, "trained")
            held = comparison.result(arm, task.name, "held-out")
            if trained is None or held is None:
                continue
            cells = []
            for result in (trained, held):
                value = float(result.metrics.get(task.score, math.nan))
                cells.append(format_rate(value, result.intervals.get(task.score)))
            rows.append([task.name, arm, task.score, *cells])
    return rows


def forgetting_summary(comparison: Comparison) -> str:
    """One line: how much each fine-tuning method moved general perplexity and accuracy."""
    rows = {row.method: row for row in comparison.forgetting}
    base = rows.get("base")
    if base is None or not ({"full", "lora"} & rows.keys()):
        return "Forgetting: not measured."
    changes = {}
    for method in ("full", "lora"):
        if method in rows:
            row = rows[method]
            ppl = (
                (row.general_perplexity / base.general_perplexity - 1)
                if base.general_perplexity
                else math.nan
            )
            acc = row.general_accuracy - base.general_accuracy
            changes[method] = (ppl, acc, row.steps)
    parts = [
        f"{method} fine-tuning ({steps} steps) moved general perplexity by {ppl:+.1%} and general "
        f"accuracy by {acc * 100:+.0f} points"
        for method, (ppl, acc, steps) in changes.items()
    ]
    verdict = ""
    if {"full", "lora"} <= changes.keys():
        full_ppl, full_acc, _ = changes["full"]
        lora_ppl, lora_acc, _ = changes["lora"]
        forgets_more = full_ppl > lora_ppl + 0.01 or full_acc < lora_acc - MARGIN
        verdict = (
            " The claim that full fine-tuning forgets more than LoRA "
            + ("holds" if forgets_more else "does not hold")
            + " on this data at this step count."
        )
    return "Forgetting: " + "; ".join(parts) + "." + verdict


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _detail_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Every measured metric per task and split, rates with their 95% intervals, one column per
    arm (counts folded into the label as ``n=``)."""
    headers = ["task", "questions", "metric", *comparison.arm_names]
    rows = []
    for task in TASKS:
        for split in SPLITS:
            results = [r for r in comparison.arms if r.task == task and r.split == split]
            names: list[str] = []
            for result in results:
                names += [n for n in result.metrics if n not in names and not n.startswith("n_")]
            for name in names:
                counts = {
                    int(ci.n)
                    for arm in comparison.arm_names
                    if (ci := comparison.interval(arm, task, name, split)) is not None
                }
                label = f"{name} (n={counts.pop()})" if len(counts) == 1 else name
                cells = []
                for arm in comparison.arm_names:
                    value = comparison.metric(arm, task, name, split)
                    if name.endswith("_s"):
                        cells.append(_secs(value))
                    else:
                        cells.append(
                            format_rate(value, comparison.interval(arm, task, name, split))
                        )
                if any(cell != "n/a" for cell in cells):  # e.g. no refusal rate without
                    rows.append([task, split, label, *cells])  # unanswerable questions
    return headers, rows


def _forgetting_rows(comparison: Comparison) -> list[list[str]]:
    return [
        [
            row.method,
            str(row.steps),
            f"{row.general_perplexity:.2f}",
            format_rate(row.general_accuracy),
        ]
        for row in comparison.forgetting
    ]


INTERVALS_NOTE = (
    "Rates are shown as value [95% interval]: Wilson score intervals for proportions, a "
    "percentile bootstrap for field accuracy; n is the number of questions. An arm is named "
    "best only when its interval clears every other arm's; `a ≈ b` lists arms the data cannot "
    "tell apart."
)

MEMORISED_HEADERS = ["task", "arm", "rate", "trained questions", "held-out questions"]


def render_markdown(comparison: Comparison) -> str:
    """The text of ``report.md``."""
    settings = comparison.settings
    lines = [
        "# tuneforge compare: fine-tuning vs retrieval (RAG), measured",
        "",
        f"Model `{comparison.model}`, budget `{comparison.budget}`, total "
        f"{_secs(comparison.seconds_total)}. Settings: "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
        + ".",
        "",
        "## The classic comparison, with our numbers (held-out questions)",
        "",
        _markdown_table(
            ["", *comparison.arm_names, "best"],
            [[row.label, *row.cells, row.best] for row in classic_table(comparison)],
        ),
        "",
        INTERVALS_NOTE,
        "",
        f"**{recommendation(comparison)}**",
        "",
    ]
    if comparison.update_cost is not None:
        lines += [f"Cost to update: {comparison.update_cost.fact}.", ""]
    memorised = memorised_rows(comparison)
    if memorised:
        lines += [
            "## Memorised vs generalised (the fine-tuned arms on questions they were trained on)",
            "",
            _markdown_table(MEMORISED_HEADERS, memorised),
            "",
        ]
    lines += ["## Every metric", "", _markdown_table(*_detail_rows(comparison)), ""]
    lines += [
        "## Forgetting (general ability before and after fine-tuning)",
        "",
        _markdown_table(
            ["method", "steps", "general perplexity ↓", "general accuracy ↑"],
            _forgetting_rows(comparison),
        ),
        "",
        forgetting_summary(comparison),
        "",
    ]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
td.best { font-weight: bold; }
.rec { background: #eef6ee; border-left: 4px solid #2ca02c; padding: 0.6em 1em; }
img { max-width: 100%; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 4px; font-size: 12px; }
"""


def _html_table(headers: list[str], rows: list[list[str]], bold: list[int] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        cells = []
        for col, cell in enumerate(row):
            css = ' class="best"' if bold is not None and bold[index] == col else ""
            cells.append(f"<td{css}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(comparison: Comparison) -> str:
    """The text of ``report.html``: tables and base64-embedded PNG plots, no external files."""
    from tuneforge.evaluate.plots import plot_arms, plot_forgetting, plot_loss_curves

    table = classic_table(comparison)
    bold = [
        comparison.arm_names.index(row.best) + 1 if row.best in comparison.arm_names else -1
        for row in table
    ]
    memorised = memorised_rows(comparison)
    samples = []
    for result in comparison.arms:
        for sample in result.samples[:2]:
            samples.append(
                [
                    result.task,
                    result.arm if result.split == "held-out" else f"{result.arm} ({result.split})",
                    sample.get("question", ""),
                    sample.get("reply", ""),
                    sample.get("verdict", ""),
                ]
            )
    sample_html = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{html.escape(a)}</td><td>{html.escape(q)}</td>"
        f"<td><pre>{html.escape(r)}</pre></td><td>{html.escape(v)}</td></tr>"
        for t, a, q, r, v in samples
    )
    settings = ", ".join(f"{k}={v}" for k, v in comparison.settings.items())
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>tuneforge compare report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>tuneforge compare: fine-tuning vs retrieval (RAG), measured</h1>",
        f"<p>Model <code>{html.escape(comparison.model)}</code>, budget "
        f"<code>{html.escape(comparison.budget)}</code>, total {_secs(comparison.seconds_total)}. "
        f"Settings: {html.escape(settings)}.</p>",
        "<h2>The classic comparison, with our numbers (held-out questions)</h2>",
        _html_table(
            ["", *comparison.arm_names, "best"], [[r.label, *r.cells, r.best] for r in table], bold
        ),
        f"<p>{html.escape(INTERVALS_NOTE)}</p>",
        f"<p class='rec'>{html.escape(recommendation(comparison))}</p>",
    ]
    if comparison.update_cost is not None:
        parts.append(f"<p>Cost to update: {html.escape(comparison.update_cost.fact)}.</p>")
    if memorised:
        parts += [
            "<h2>Memorised vs generalised</h2>",
            _html_table(MEMORISED_HEADERS, memorised),
        ]
    parts += [
        "<h2>The arms per metric</h2>",
        _img(plot_arms(comparison), "the arms per metric"),
        "<h2>Loss curves</h2>",
        _img(plot_loss_curves(comparison.loss_curves), "loss curves"),
        "<h2>Forgetting</h2>",
        _img(plot_forgetting(comparison.forgetting), "forgetting"),
        _html_table(
            ["method", "steps", "general perplexity ↓", "general accuracy ↑"],
            _forgetting_rows(comparison),
        ),
        f"<p>{html.escape(forgetting_summary(comparison))}</p>",
        "<h2>Every metric</h2>",
        _html_table(*_detail_rows(comparison)),
    ]
    if sample_html:
        parts += [
            "<h2>Sample replies</h2>",
            "<table><tr><th>task</th><th>arm</th><th>question</th><th>reply</th><th>verdict</th></tr>"
            f"{sample_html}</table>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(comparison: Comparison, out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir`` atomically; return their paths."""
    from tuneforge.atomic import write_text

    out_dir = Path(out_dir)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text(md_path, render_markdown(comparison))
    write_text(html_path, render_html(comparison))
    return md_path, html_path
