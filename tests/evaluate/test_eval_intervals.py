"""Interval arithmetic against published values, and the rates evaluate() reports with them."""

from __future__ import annotations

import math

import pytest

from tuneforge.evaluate.intervals import (
    Interval,
    bootstrap_interval,
    proportion_interval,
    questions_needed,
    wilson_bounds,
    wilson_interval,
)
from tuneforge.evaluate.runner import Response, evaluate, rate_intervals

# Newcombe 1998, "Two-sided confidence intervals for the single proportion", Table I, method 3
# (Wilson score interval without continuity correction).
NEWCOMBE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("successes", "n", "low", "high"), NEWCOMBE)
def test_wilson_matches_newcombes_table(successes, n, low, high):
    interval = wilson_interval(successes, n)
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)
    assert (interval.n, interval.method) == (n, "wilson")


def test_wilson_edges_stay_inside_zero_and_one():
    none, every = wilson_interval(0, 10), wilson_interval(10, 10)
    assert none.low == 0.0 and round(none.high, 4) == 0.2775  # z²/(n+z²)
    assert every.high == 1.0 and round(every.low, 4) == 0.7225
    assert math.isnan(wilson_interval(0, 0).low)
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(11, 10)


def test_proportion_interval_recovers_the_count_from_a_rate():
    assert proportion_interval(81 / 263, 263) == wilson_interval(81, 263)
    assert math.isnan(proportion_interval(math.nan, 10).low)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.0, 1.0] * 10
    first, again = bootstrap_interval(values), bootstrap_interval(values)
    assert first == again  # seeded: a report re-renders the same
    assert first.low < 0.5 < first.high and first.n == 20 and first.method == "bootstrap"
    # The normal approximation of the mean's 95% interval: 0.5 ± 1.96·0.5/√20 = [0.28, 0.72].
    assert 0.25 <= first.low <= 0.32 and 0.68 <= first.high <= 0.75
    assert bootstrap_interval([0.5] * 8) == Interval(0.5, 0.5, 8, "bootstrap")


def test_questions_needed_is_where_the_wilson_intervals_part():
    def apart(p1: float, p2: float, n: int) -> bool:
        return wilson_bounds(max(p1, p2), n)[0] > wilson_bounds(min(p1, p2), n)[1]

    for p1, p2 in [(0.65, 0.60), (0.95, 0.80), (0.9, 0.75), (1.0, 0.0), (0.67, 0.0)]:
        n = questions_needed(p1, p2)
        assert apart(p1, p2, n) and not apart(p1, p2, n - 1), (p1, p2, n)
        assert questions_needed(p2, p1) == n  # symmetric
    # Away from 0 and 1 it matches the stated approximation: 65% vs 60%:
    # (1.96·(√(.65·.35) + √(.6·.4)) / .05)² = 1436.3.
    assert questions_needed(0.65, 0.60) == 1441
    # Near the edges the approximation would undercount; the search does not: 67% vs 0% on 6
    # questions overlap ([30–90%] vs [0–39%]), and 8 questions are needed, not 3.
    assert not wilson_interval(4, 6).separates_above(wilson_interval(0, 6))
    assert questions_needed(4 / 6, 0.0) == 8
    assert questions_needed(0.5, 0.5) is None


def test_twenty_questions_cannot_separate_five_points():
    # The rule: a user with 20 questions must not be told a 5-point difference is real.
    better, worse = wilson_interval(13, 20), wilson_interval(12, 20)  # 65% vs 60%
    assert not better.separates_above(worse)
    assert wilson_interval(19, 20).separates_above(wilson_interval(6, 20))  # 95% vs 30% does


def test_evaluate_reports_an_interval_for_every_rate():
    items = [{"question": f"q{i}", "answer": "yes", "source": "a.md"} for i in range(8)] + [
        {"question": f"u{i}", "answer": None} for i in range(4)
    ]

    def respond(item):
        if item["prompt"].startswith("u"):
            return Response("I don't know.", 0.1, refused=item["prompt"] != "u0")
        right = int(item["prompt"][1:]) < 6  # 6 of 8 right, citing source 1
        return Response("yes [1]" if right else "no", 0.1, {1: "a.md"})

    result = evaluate(
        None, None, items, ["contains_answer", "citation", "refusal", "latency"], responder=respond
    )
    intervals = result.intervals
    assert intervals["contains_answer"] == wilson_interval(6, 8)
    assert intervals["citation_correct"] == wilson_interval(6, 8)
    assert intervals["refusal_rate"] == wilson_interval(3, 4)
    mirrored = intervals["hallucination_rate"]
    assert (mirrored.low, mirrored.high) == pytest.approx(
        (1 - intervals["refusal_rate"].high, 1 - intervals["refusal_rate"].low)
    )
    assert intervals["over_refusal_rate"] == wilson_interval(0, 8)
    assert result.to_dict()["intervals"]["contains_answer"]["n"] == 8


def test_field_accuracy_gets_a_bootstrap_interval():
    rows = [{"field_accuracy": value} for value in (1.0, 0.5, 0.8, 0.2)]
    interval = rate_intervals(rows, ["json"])["field_accuracy"]
    assert interval.method == "bootstrap" and interval.n == 4
    assert interval.low >= 0.2 and interval.high <= 1.0
