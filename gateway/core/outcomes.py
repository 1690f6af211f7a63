"""What an experiment measures: exposures (calls served in it), feedback, and per-unit aggregates.

The unit of analysis is the user (the hash of the user key); a call assigned at random (no user
key) is a unit of its own, keyed by its request id. Every call served while an experiment runs is
an `Exposure`; apps report outcomes the gateway cannot see as `Feedback` (`POST /v1/feedback`).
Stores keep, per experiment, arm and unit, the running sums that results need (`UnitOutcome`),
so results cost time in units, not in requests; a store sums those per arm itself (`ArmTotals`),
so results cost the store one pass over the units and Python nothing per unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

Variant = Literal["control", "treatment"]
FeedbackMetric = Literal["user_satisfaction", "task_completion"]
FEEDBACK_METRICS: tuple[FeedbackMetric, ...] = ("user_satisfaction", "task_completion")
Direction = Literal["higher_is_better", "lower_is_better"]

DIRECTIONS: dict[str, Direction] = {
    "user_satisfaction": "higher_is_better",
    "task_completion": "higher_is_better",
    "latency": "lower_is_better",
    "cost_per_task": "lower_is_better",
}
"""Which way each metric (PRODUCT §11) improves."""

BINARY_METRICS = frozenset({"task_completion"})
"""Metrics whose values are 0 or 1 (compared with a two-proportion z-test)."""

SATISFACTION_RANGE = (0.0, 5.0)
"""`user_satisfaction` values: a rating from 0 to 5 (thumbs down/up as 0/1 fit too)."""


class Exposure(NamedTuple):
    """One call served while an experiment ran.

    A NamedTuple, not a frozen dataclass: one is made for every call served in an experiment,
    and a tuple is built in C, about four times faster.
    """

    request_id: str
    experiment_id: str
    variant: Variant
    version: str
    unit: str
    """The user key's hash, or the request id when the call was assigned at random."""
    at: datetime
    latency_ms: float
    """End to end, arrival to last byte."""
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    """None when the price table has no price for the model."""
    status: int
    trace_id: str | None = None
    """The call's trace (32 hex digits) when tracing is on: the console links it
    (`ui.trace_url`)."""


ExposureRow = tuple[
    str, str, str, str, str, int, float, int | None, int | None, float | None, int, str | None
]
"""An exposure as recorded: `Exposure`'s twelve fields in its order, its time `at` as an integer
of microseconds since the epoch (UTC). What the outcome recorder queues and the stores write.

A plain tuple with an integer time: one is made for every call served in an experiment, and
written without making a datetime or an `Exposure` per call (making both, and the tuple the
Redis store sent, took about 14,000 instructions per exposure; the row about 3,000, checks and
JSON included; callgrind, benchmarks/README.md). Microseconds, not nanoseconds: every
`datetime` (years 1 to 9999) fits in 64 bits, as JSON encoders want."""


def exposure_row(exposure: Exposure) -> ExposureRow:
    """The row of an Exposure (a naive `at` is taken as UTC); inverse of `exposure_of`."""
    at = exposure.at if exposure.at.tzinfo is not None else exposure.at.replace(tzinfo=UTC)
    return (*exposure[:5], (at - EPOCH) // MICROSECOND, *exposure[6:])


def exposure_of(row: ExposureRow) -> Exposure:
    """The Exposure of a row, `at` in UTC (exact for every datetime: no float seconds)."""
    rid, experiment, variant, version, unit, at_us, latency, sent, received, cost, status, trace = (
        row
    )
    at = EPOCH + timedelta(microseconds=at_us)
    return Exposure(
        rid,
        experiment,
        variant,  # type: ignore[arg-type]
        version,
        unit,
        at,
        latency,
        sent,
        received,
        cost,
        status,
        trace,
    )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Feedback:
    """An outcome an app reports for one call; a later value for the same metric replaces it."""

    request_id: str
    metric: FeedbackMetric
    value: float
    at: int = 0
    """When a gateway took it: microseconds since the epoch. Of two values for one request id
    and metric the later one stays, whichever gateway's batch reaches the store last (0: older
    than any timed value; of equal times, the one written last)."""


@dataclass(frozen=True, slots=True)
class UnitOutcome:
    """One unit's aggregate of one metric in one arm of an experiment."""

    variant: Variant
    unit: str
    requests: int
    """Exposures of the unit."""
    total: float
    """Sum of the metric's values: latencies (ms), costs (USD), or feedback values."""
    count: int
    """How many values the sum holds (0: the unit has no value for this metric)."""

    @property
    def mean(self) -> float | None:
        """The unit's own mean of the metric, None without a value."""
        return self.total / self.count if self.count else None


@dataclass(frozen=True, slots=True)
class ArmTotals:
    """One arm of an experiment summed over its units: all that results need of one metric.

    `mean` and `squared_deviations` are over the units with a value, each weighing its own
    mean (`UnitOutcome.mean`); the arm's sample variance is `squared_deviations / (with_value -
    1)`. Two passes over the units (the mean, then the deviations from it) keep the variance as
    exact as computing it from the units' means would, whatever the size of the mean.
    """

    users: int
    """Units exposed in the arm, with or without a value."""
    requests: int
    """Exposures of those units."""
    with_value: int
    """Units with at least one value of the metric."""
    mean: float | None
    """Mean over those units of each unit's mean, in the metric's unit; None when there is none."""
    squared_deviations: float | None
    """Sum over those units of (unit mean - `mean`)²; None when there is none."""


NO_UNITS = ArmTotals(0, 0, 0, None, None)
"""An arm nobody was exposed in."""


@dataclass(frozen=True, slots=True)
class PeriodTotal:
    """One hour of one arm of an experiment: its exposures, and the values of one metric that
    exposures of that hour have (feedback counts in the hour of the call it is about)."""

    period: str
    """The hour, UTC, as `YYYY-MM-DDTHH` (the first 13 characters of the exposure's ISO time)."""
    variant: Variant
    requests: int
    """Exposures in the hour."""
    count: int
    """Values of the metric (latency: every exposure; cost: those with a cost; feedback: the
    calls that have a value)."""
    total: float
    """Their sum."""
    squares: float
    """The sum of their squares (for an interval)."""


PERIOD_CHARS = 13
"""An exposure's hour is the first 13 characters of its UTC ISO time: `2026-03-01T14`."""


def check_feedback_value(metric: str, value: object) -> str | None:
    """Why `value` is not a valid `metric` value, or None when it is.

    `task_completion` is 0 or 1; `user_satisfaction` a finite number in SATISFACTION_RANGE.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"value must be a number, not {_json_type(value)}"
    if not math.isfinite(value):
        return "value must be a finite number"
    if metric == "task_completion" and value not in (0, 1):
        return f"task_completion is 0 or 1, not {value:g}"
    low, high = SATISFACTION_RANGE
    if metric == "user_satisfaction" and not low <= value <= high:
        return f"user_satisfaction is between {low:g} and {high:g}, not {value:g}"
    return None


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages to API clients."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
