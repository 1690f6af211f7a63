"""An experiment's difference over time (PRODUCT §6.3): the cumulative difference of the arms'
means at the end of each hour or day, with a 95% interval, from the stores' per-hour sums.

This is a request-level view (each value weighs the same, whoever sent it), drawn to show whether
the difference has settled; the decision itself is §11's per-user analysis (`stats.analyze`). The
interval is the normal approximation, mean difference ± 1.96 standard errors, each arm's variance
from its sum of squares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.outcomes import PeriodTotal

Z95 = 1.959963984540054
"""The standard normal's 97.5th percentile."""

HOURLY_UP_TO = 48
"""More hours than this are shown as days."""


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """The experiment as of the end of one period."""

    period: str
    """`YYYY-MM-DDTHH` (hourly) or `YYYY-MM-DD` (daily), UTC."""
    control_requests: int
    """Calls in this period, per arm."""
    treatment_requests: int
    control_mean: float | None
    """Mean of the metric's values so far (cumulative), None without a value."""
    treatment_mean: float | None
    difference: float | None
    """treatment_mean - control_mean, None unless both arms have a value."""
    low: float | None
    """The difference's 95% interval; None unless each arm has two values or more."""
    high: float | None


@dataclass(slots=True)
class _Sums:
    requests: int = 0
    count: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, p: PeriodTotal | _Sums) -> None:
        self.requests += p.requests
        self.count += p.count
        self.total += p.total
        self.squares += p.squares

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def variance_of_mean(self) -> float | None:
        if self.count < 2:
            return None
        mean = self.total / self.count
        # Clamped: the difference of two large sums may round below zero.
        variance = max(self.squares - self.count * mean * mean, 0.0) / (self.count - 1)
        return variance / self.count


def difference_over_time(totals: Sequence[PeriodTotal]) -> list[TrendPoint]:
    """One point per hour (per day past HOURLY_UP_TO hours), oldest first; none without totals."""
    hours = {total.period for total in totals}
    cut = 10 if len(hours) > HOURLY_UP_TO else 13
    periods: dict[str, dict[str, _Sums]] = {}
    for total in totals:
        arms = periods.setdefault(total.period[:cut], {"control": _Sums(), "treatment": _Sums()})
        arms[total.variant].add(total)
    control, treatment = _Sums(), _Sums()
    points = []
    for period in sorted(periods):
        now = periods[period]
        control.add(now["control"])
        treatment.add(now["treatment"])
        c, t = control.mean, treatment.mean
        difference = t - c if c is not None and t is not None else None
        low = high = None
        vc, vt = control.variance_of_mean(), treatment.variance_of_mean()
        if difference is not None and vc is not None and vt is not None:
            half = Z95 * math.sqrt(vc + vt)
            low, high = difference - half, difference + half
        points.append(
            TrendPoint(
                period,
                now["control"].requests,
                now["treatment"].requests,
                c,
                t,
                difference,
                low,
                high,
            )
        )
    return points
