"""``report.md`` and a self-contained ``report.html`` from a :class:`Comparison`.

The classic "RAG vs fine-tuning" table (adding knowledge, teaching a format, reducing
hallucination, cost to update, latency) is filled with measured numbers, and the one-line
recommendation is chosen by a rule over those numbers (:func:`recommendation`), never written
by hand: if a claim does not hold on the data, the line says so.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

from tuneforge.evaluate.arms import COMPARE_ARMS, Arm
from tuneforge.evaluate.results import ARMS, TASKS, Comparison, UpdateCost

MARGIN = 0.05
"""Two rates closer than this (5 percentage points) count as a tie in the recommendation."""


@dataclass
class TableRow:
    """One row of the classic table: a label, one cell per arm, the best arm by the row's rule."""

    label: str
    cells: list[str]
    best: str


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0%}"


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


def classic_table(comparison: Comparison) -> list[TableRow]:
    """The five rows of the classic comparison, one measured cell per arm."""
    rows = []
    for label, task, metric, higher in [
        (
            "Adding knowledge (contains answer, answerable KB questions) ↑",
            "knowledge",
            "contains_answer",
            True,
        ),
        ("Teaching a format (schema-valid JSON replies) ↑", "json", "schema_valid", True),
        (
            "Reducing hallucination (answers to unanswerable questions) ↓",
            "knowledge",
            "hallucination_rate",
            False,
        ),
    ]:
        values = {arm: comparison.metric(arm, task, metric) for arm in ARMS}
        rows.append(TableRow(label, [_pct(values[arm]) for arm in ARMS], _best(values, higher)))

    costs = _update_costs(comparison)
    rows.append(
        TableRow(
            "Cost to update one fact (wall seconds) ↓",
            [_secs(costs[arm]) for arm in ARMS],
            _best(costs, higher_is_better=False),
        )
    )
    latency = {arm: comparison.metric(arm, "knowledge", "latency_mean_s") for arm in ARMS}
    base = latency["base"]
    cells = []
    for arm in ARMS:
        added = latency[arm] - base
        suffix = "" if arm == "base" or math.isnan(added) else f" ({added:+.2f})"
        cells.append(_secs(latency[arm]) + suffix)
    rows.append(
        TableRow(
            "Latency per answer (mean s, knowledge task; added vs base) ↓",
            cells,
            _best(latency, higher_is_better=False),
        )
    )
    return rows


def recommendation(comparison: Comparison, margin: float = MARGIN) -> str:
    """One line chosen by rule from the measured numbers.

    Facts: base+RAG vs fine-tuned on contains-answer. Format: fine-tuned vs the better untuned
    arm (base, base+RAG) on schema validity. Both: fine-tuned+RAG within ``margin`` of the best
    arm on both. Update cost: re-ingest vs re-train seconds. A difference under ``margin`` is
    reported as no clear winner.
    """

    def value(arm: str, task: str, metric: str) -> float:
        return comparison.metric(arm, task, metric)

    parts = []
    rag_k, ft_k = (
        value("base+rag", "knowledge", "contains_answer"),
        value("fine-tuned", "knowledge", "contains_answer"),
    )
    if math.isnan(rag_k) or math.isnan(ft_k):
        parts.append("facts: not measured")
    elif rag_k - ft_k >= margin:
        parts.append(
            f"retrieve for facts (base+RAG {_pct(rag_k)} vs fine-tuned {_pct(ft_k)} contains-answer)"
        )
    elif ft_k - rag_k >= margin:
        parts.append(
            f"fine-tune for facts (fine-tuned {_pct(ft_k)} vs base+RAG {_pct(rag_k)} contains-answer)"
        )
    else:
        parts.append(f"facts: no clear winner (base+RAG {_pct(rag_k)} vs fine-tuned {_pct(ft_k)})")

    ft_f = value("fine-tuned", "json", "schema_valid")
    untuned = [(arm, value(arm, "json", "schema_valid")) for arm in ("base", "base+rag")]
    untuned = [(arm, v) for arm, v in untuned if not math.isnan(v)]
    if math.isnan(ft_f) or not untuned:
        parts.append("format: not measured")
    else:
        best_arm, best_f = max(untuned, key=lambda item: item[1])
        if ft_f - best_f >= margin:
            parts.append(
                f"fine-tune for format (fine-tuned {_pct(ft_f)} vs {best_arm} {_pct(best_f)} schema-valid)"
            )
        elif best_f - ft_f >= margin:
            parts.append(
                f"no need to fine-tune for format ({best_arm} {_pct(best_f)} vs fine-tuned {_pct(ft_f)} schema-valid)"
            )
        else:
            parts.append(
                f"format: no clear winner (fine-tuned {_pct(ft_f)} vs {best_arm} {_pct(best_f)})"
            )

    both_ok = True
    for task, metric in (("knowledge", "contains_answer"), ("json", "schema_valid")):
        values = [value(arm, task, metric) for arm in ARMS]
        measured = [v for v in values if not math.isnan(v)]
        both = value("fine-tuned+rag", task, metric)
        both_ok = (
            both_ok
            and bool(measured)
            and not math.isnan(both)
            and both >= margin  # an arm that gets nothing right is not "the best of both"
            and both >= max(measured) - margin
        )
    if both_ok:
        parts.append(
            "do both when you need both (fine-tuned+RAG is within "
            f"{margin * 100:.0f} points of the best arm on both tasks)"
        )
    else:
        parts.append("fine-tuned+RAG is not the best of both here")

    cost = comparison.update_cost
    if cost is not None and cost.reingest_seconds > 0 and not math.isnan(cost.retrain_seconds):
        ratio = cost.retrain_seconds / cost.reingest_seconds
        parts.append(
            f"updating a fact costs {_secs(cost.reingest_seconds)} by re-ingest vs "
            f"{_secs(cost.retrain_seconds)} by re-training ({ratio:.0f}×)"
        )
    return "Recommendation: " + "; ".join(parts) + "."


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
    """Every measured metric (counts folded into the label as ``n=``), one column per arm."""
    headers = ["task", "metric", *ARMS]
    rows = []
    for task in TASKS:
        names: list[str] = []
        for result in comparison.arms:
            if result.task == task:
                names += [n for n in result.metrics if n not in names and not n.startswith("n_")]
        for name in names:
            counts = {comparison.metric(arm, task, f"n_{name}") for arm in ARMS}
            counts = {int(c) for c in counts if not math.isnan(c)}
            label = f"{name} (n={counts.pop()})" if len(counts) == 1 else name
            cells = []
            for arm in ARMS:
                v = comparison.metric(arm, task, name)
                cells.append(_secs(v) if name.endswith("_s") else _pct(v))
            rows.append([task, label, *cells])
    return headers, rows


def _forgetting_rows(comparison: Comparison) -> list[list[str]]:
    return [
        [row.method, str(row.steps), f"{row.general_perplexity:.2f}", _pct(row.general_accuracy)]
        for row in comparison.forgetting
    ]


def render_markdown(comparison: Comparison) -> str:
    """The text of ``report.md``."""
    settings = comparison.settings
    lines = [
        "# tuneforge compare: fine-tuning vs retrieval, measured",
        "",
        f"Model `{comparison.model}`, budget `{comparison.budget}`, total "
        f"{_secs(comparison.seconds_total)}. Settings: "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
        + ".",
        "",
        "## The classic comparison, with our numbers",
        "",
        _markdown_table(
            ["", *ARMS, "best"],
            [[row.label, *row.cells, row.best] for row in classic_table(comparison)],
        ),
        "",
        f"**{recommendation(comparison)}**",
        "",
    ]
    if comparison.update_cost is not None:
        lines += [f"Cost to update: {comparison.update_cost.fact}.", ""]
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
    bold = [ARMS.index(row.best) + 1 if row.best in ARMS else -1 for row in table]
    samples = []
    for result in comparison.arms:
        for sample in result.samples[:2]:
            samples.append(
                [
                    result.task,
                    result.arm,
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
        "<h1>tuneforge compare: fine-tuning vs retrieval, measured</h1>",
        f"<p>Model <code>{html.escape(comparison.model)}</code>, budget "
        f"<code>{html.escape(comparison.budget)}</code>, total {_secs(comparison.seconds_total)}. "
        f"Settings: {html.escape(settings)}.</p>",
        "<h2>The classic comparison, with our numbers</h2>",
        _html_table(["", *ARMS, "best"], [[r.label, *r.cells, r.best] for r in table], bold),
        f"<p class='rec'>{html.escape(recommendation(comparison))}</p>",
    ]
    if comparison.update_cost is not None:
        parts.append(f"<p>Cost to update: {html.escape(comparison.update_cost.fact)}.</p>")
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
