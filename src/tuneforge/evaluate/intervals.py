"""95% intervals for the rates a comparison reports, and how many questions a verdict needs.

A rate measured on a few dozen questions is uncertain by tens of points; every rate in a report
carries its interval and its count, and a winner is named only where intervals separate.

- Proportions (contains-answer, citation-correct, refusal, schema-valid, ...): the Wilson score
  interval (Wilson 1927), which stays inside [0, 1] and keeps its coverage at small n and at
  rates near 0 or 1, where the textbook ``p ± 1.96·sqrt(p(1-p)/n)`` fails (it gives [0, 0] for
  0 of 10).
- Means of per-question scores that are not 0/1 (field accuracy): the percentile bootstrap
  (Efron 1979) over questions, seeded so a report is reproducible.
- Questions needed: the smallest count ``n`` (the same questions asked of both arms) at which
  the two rates' Wilson intervals stop overlapping. Away from 0 and 1, where intervals of
  half-width ``z·sqrt(p(1-p)/n)`` stop overlapping once
  ``|p1 - p2| > z·(sqrt(p1(1-p1)) + sqrt(p2(1-p2)))/sqrt(n)``, that is
  ``n ≈ (z·(sqrt(p1(1-p1)) + sqrt(p2(1-p2))) / (p1 - p2))²``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Z_95 = 1.959963984540054
"""The standard normal's 97.5% quantile: a two-sided 95% interval."""


@dataclass(frozen=True)
class Interval:
    """A 95% interval around a measured value.

    Attributes:
        low: lower bound.
        high: upper bound.
        n: how many questions (items) the value was measured on.
        method: ``wilson`` or ``bootstrap``.
    """

    low: float
    high: float
    n: int
    method: str

    def separates_above(self, other: Interval) -> bool:
        """True when this interval lies wholly above ``other`` (no overlap)."""
        return self.low > other.high

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "n": self.n, "method": self.method}


def wilson_bounds(p: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a rate ``p`` measured on ``n`` items (``n`` > 0).

    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.
    """
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return center - half, center + half


def wilson_interval(successes: int, n: int, z: float = Z_95) -> Interval:
    """The Wilson score interval of ``successes`` out of ``n`` (:func:`wilson_bounds`).

    Raises:
        ValueError: ``n`` < 0 or ``successes`` outside [0, n].
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Interval(math.nan, math.nan, 0, "wilson")
    low, high = wilson_bounds(successes / n, n, z)
    # In exact arithmetic p = 0 gives a lower bound of 0 and p = 1 an upper bound of 1; floats
    # leave rounding dust (0.9999999999999999), so those bounds are set exactly.
    return Interval(0.0 if successes == 0 else low, 1.0 if successes == n else high, n, "wilson")


def proportion_interval(rate: float, n: int) -> Interval:
    """The Wilson interval of a rate measured as a fraction of ``n`` (``rate·n`` successes)."""
    if n <= 0 or math.isnan(rate):
        return Interval(math.nan, math.nan, max(n, 0), "wilson")
    return wilson_interval(round(rate * n), n)


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """The 95% percentile-bootstrap interval of ``statistic`` (default: the mean) over ``values``.

    Resamples ``values`` with replacement ``resamples`` times (seeded), computes the statistic of
    each and takes the 2.5th and 97.5th percentiles.
    """
    values = list(values)
    if not values:
        return Interval(math.nan, math.nan, 0, "bootstrap")
    statistic = statistic or (lambda sample: sum(sample) / len(sample))
    rng = random.Random(seed)
    draws = sorted(
        statistic([values[rng.randrange(len(values))] for _ in values]) for _ in range(resamples)
    )
    low = draws[math.floor(0.025 * (resamples - 1))]
    high = draws[math.ceil(0.975 * (resamples - 1))]
    return Interval(low, high, len(values), "bootstrap")


def questions_needed(p1: float, p2: float, z: float = Z_95, limit: int = 10**7) -> int | None:
    """Questions per arm for rates ``p1`` and ``p2`` to have separate 95% Wilson intervals.

    The smallest ``n`` at which :func:`wilson_bounds` of the two rates no longer overlap, found
    by doubling then bisection; away from 0 and 1 it is close to the normal approximation
    ``n ≈ (z·(sqrt(p1(1-p1)) + sqrt(p2(1-p2))) / (p1 - p2))²`` (see the module docstring), and
    unlike it, it stays right for small counts and rates of 0 or 1, so it is always more than
    the count on which the two intervals were seen to overlap.

    Returns:
        the count; None when ``p1 == p2`` (no count separates equal rates) or it exceeds
        ``limit``.
    """
    if any(math.isnan(p) for p in (p1, p2)) or p1 == p2:
        return None
    low, high = sorted((p1, p2))

    def separated(n: int) -> bool:
        return wilson_bounds(high, n, z)[0] > wilson_bounds(low, n, z)[1]

    n = 1
    while not separated(n):
        n *= 2
        if n > limit:
            return None
    lo = n // 2  # not separated (or 0)
    while n - lo > 1:
        middle = (lo + n) // 2
        lo, n = (lo, middle) if separated(middle) else (middle, n)
    return n
