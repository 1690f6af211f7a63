"""An experiment's results from per-unit aggregates: arm means, their difference, a test, SRM.

`analyze_totals(experiment, control, treatment, alpha=..., min_units=...)` turns each arm's sums
over its units (`ArmTotals`: units, requests, units with a value, the mean of their means and the
sum of squared deviations from it, which a store computes where the units are) into the frozen
`ExperimentResults` whose `to_json()` is the results object of PRODUCT §11. `analyze(experiment,
units, ...)` is the same from one `UnitOutcome` per unit, summed here (`arm_totals`).
The unit of analysis is the unit: each unit's own mean (`total / count`) is one observation, so a
chatty user weighs as much as a quiet one. Those sums are sufficient statistics: Welch's test,
the z-test, every interval and the SRM check need nothing else.

Sources: Welch's t-test and its degrees of freedom (Welch 1947, "The generalization of Student's
problem when several different population variances are involved"; Satterthwaite 1946); the
pooled two-proportion z-test and the unpooled Wald interval for a difference of proportions
(Agresti, Categorical Data Analysis: comparing two proportions); Pearson's (1900) chi-square
goodness of fit for the sample ratio mismatch (SRM) check. scipy provides the t, normal and
chi-square distributions.

Where a figure cannot be computed it is None (null in JSON), never NaN:

- an arm with no unit with a value has no `mean`; an arm with fewer than 2 has no `ci95`;
- the difference's `ci95` and the test's `p_value` need 2 units with a value in each arm;
- `relative` is None when the control mean is 0;
- both arms constant and equal: the difference is exactly 0, its interval [0, 0], p = 1.0;
- continuous metric, both arms constant but different: Welch's statistic divides by a zero
  standard error, so `p_value` is None and the recommendation stays `keep_running`;
- no unit at all: the SRM p-value is None and there is no mismatch.

Interval edge cases follow the textbook formulas without repair: a Wald interval around p = 0 or
p = 1 has zero width, and a Wald interval may reach past [0, 1]; neither is clipped.
For 0/1 metrics the variance is p(1-p) as §11 prescribes, even when a user gave several values
and their mean is fractional: such means vary less than p(1-p), so the Wald intervals are wider
and the z-test more conservative (fewer false positives) than they need be.

scipy and numpy are imported inside the functions that use them: the gateway imports the core at
start-up and must not pay scipy's import time and memory until someone may ask for results. A
gateway with admin tokens (so a console and /admin results) calls `warm_up` in a thread at start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gateway.core.model import Experiment
from gateway.core.outcomes import (
    BINARY_METRICS,
    DIRECTIONS,
    ArmTotals,
    Direction,
    UnitOutcome,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Recommendation = Literal["keep_running", "promote_treatment", "keep_control"]
TestName = Literal["welch_t", "two_proportion_z"]
Interval = tuple[float, float]

CONFIDENCE = 0.95
"""Every interval is a 95% interval, whatever `alpha` (the decision threshold) is."""
SRM_P_THRESHOLD = 0.001
"""A sample ratio mismatch is flagged when the chi-square p-value is below this."""


@dataclass(frozen=True, slots=True)
class ArmResult:
    """One arm: who was exposed, and the metric's mean over units with a value."""

    version: str
    users: int
    """Units exposed in the arm (with or without a value)."""
    requests: int
    """Exposures of those units."""
    with_value: int
    """Units with at least one value of the metric: the n of every figure below."""
    mean: float | None
    """Mean over units with a value of each unit's mean; None without one."""
    ci95: Interval | None
    """95% interval of `mean`: Student t for continuous metrics, Wald for 0/1 ones; None when
    `with_value` < 2."""


@dataclass(frozen=True, slots=True)
class Difference:
    """Treatment mean minus control mean."""

    absolute: float | None
    ci95: Interval | None
    """95% interval: Welch-Satterthwaite t for continuous metrics, unpooled Wald for 0/1 ones."""
    relative: float | None
    """`absolute / control mean`; None when that mean is 0 or missing."""


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """Pearson's chi-square goodness of fit of the users per arm against the configured split."""

    expected_treatment_share: float
    control: int
    treatment: int
    p_value: float | None
    """None when no unit was exposed."""
    mismatch: bool
    """p < SRM_P_THRESHOLD: assignment or recording is broken, and the comparison is unsafe."""


@dataclass(frozen=True, slots=True)
class ExperimentResults:
    """The results of PRODUCT §11; `to_json()` gives its exact JSON object."""

    experiment: str
    prompt_name: str
    metric: str
    status: str
    direction: Direction
    alpha: float
    control: ArmResult
    treatment: ArmResult
    difference: Difference
    test: TestName
    statistic: float | None
    """Welch's t or the pooled z, treatment minus control; None with `p_value`."""
    df: float | None
    """Welch-Satterthwaite degrees of freedom (`welch_t` only)."""
    p_value: float | None
    """Two-sided; None when the test cannot be computed."""
    srm: SampleRatio
    recommendation: Recommendation
    reason: str
    """Which rule decided, in words, with the numbers."""

    def to_json(self) -> dict[str, Any]:
        """The §11 object: its names exactly, plus `with_value` per arm, `statistic` and `df`.

        Intervals are `[lo, hi]` lists, or null when they cannot be computed.
        """
        return {
            "experiment": self.experiment,
            "prompt_name": self.prompt_name,
            "metric": self.metric,
            "status": self.status,
            "direction": self.direction,
            "alpha": self.alpha,
            "control": _arm_json(self.control),
            "treatment": _arm_json(self.treatment),
            "difference": {
                "absolute": self.difference.absolute,
                "ci95": _interval_json(self.difference.ci95),
                "relative": self.difference.relative,
            },
            "test": self.test,
            "statistic": self.statistic,
            "df": self.df,
            "p_value": self.p_value,
            "srm": {
                "expected_treatment_share": self.srm.expected_treatment_share,
                "observed": {"control": self.srm.control, "treatment": self.srm.treatment},
                "p_value": self.srm.p_value,
                "mismatch": self.srm.mismatch,
            },
            "recommendation": self.recommendation,
            "reason": self.reason,
        }


def warm_up() -> None:
    """Import scipy's statistics now (about a second; blocking: call it in a thread)."""
    from scipy import stats  # noqa: F401


def analyze(
    experiment: Experiment,
    units: Sequence[UnitOutcome],
    *,
    alpha: float,
    min_units: int,
) -> ExperimentResults:
    """Results of `experiment` from one `UnitOutcome` per (arm, unit) of its metric: the
    definition that `analyze_totals` computes from a store's per-arm sums.

    `units` holds every exposed unit, with `count == 0` for those without a value (they count
    in `users`, `requests` and the SRM check, not in means). Raises ValueError on an unknown
    variant, and as `analyze_totals` does. Time is linear in `len(units)`: 100,000 units take
    tens of milliseconds.
    """
    control, treatment = arm_totals(units)
    return analyze_totals(experiment, control, treatment, alpha=alpha, min_units=min_units)


def arm_totals(units: Sequence[UnitOutcome]) -> tuple[ArmTotals, ArmTotals]:
    """The control and treatment `ArmTotals` of per-unit outcomes (numpy, two passes).

    Raises ValueError when a unit's variant is neither 'control' nor 'treatment'.
    """
    import numpy as np

    n = len(units)
    treated = np.fromiter((u.variant == "treatment" for u in units), dtype=bool, count=n)
    control_mask = np.fromiter((u.variant == "control" for u in units), dtype=bool, count=n)
    if not np.all(treated | control_mask):
        strays = sorted({u.variant for u in units} - {"control", "treatment"})
        raise ValueError(f"Unknown variant(s) {strays}; units are 'control' or 'treatment'")
    requests = np.fromiter((u.requests for u in units), dtype=np.int64, count=n)
    totals = np.fromiter((u.total for u in units), dtype=np.float64, count=n)
    counts = np.fromiter((u.count for u in units), dtype=np.int64, count=n)
    valued = counts > 0
    means = np.divide(totals, counts, out=np.zeros(n), where=valued)

    def arm(mask: npt.NDArray[np.bool_]) -> ArmTotals:
        values = means[mask & valued]
        mean = float(values.mean()) if values.size else None
        squares = float(np.square(values - mean).sum()) if mean is not None else None
        return ArmTotals(int(mask.sum()), int(requests[mask].sum()), values.size, mean, squares)

    return arm(control_mask), arm(treated)


def analyze_totals(
    experiment: Experiment,
    control_totals: ArmTotals,
    treatment_totals: ArmTotals,
    *,
    alpha: float,
    min_units: int,
) -> ExperimentResults:
    """Results of `experiment` from each arm's sums over its units (`ArmTotals`, as
    `OutcomeStore.arm_totals` gives them): no work per unit.

    Metric values are in the metric's own unit (ms for latency, USD for cost_per_task, 0/1 for
    task_completion, 0..5 for user_satisfaction). `alpha` is the two-sided significance
    threshold of the recommendation; `min_units` the units with a value each arm needs before
    anything but `keep_running`.

    The recommendation is `keep_running` on a sample ratio mismatch, while either arm has fewer
    than `min_units` units with a value, or when p >= alpha or p is None; otherwise the arm the
    metric's direction prefers. SRM is checked first: it means the data are broken, which waiting
    for more units will not mend. Raises ValueError on an unknown metric or an alpha outside
    (0, 1). Takes a few milliseconds (scipy's distributions), whatever the number of units.
    """
    if experiment.metric not in DIRECTIONS:
        known = ", ".join(sorted(DIRECTIONS))
        raise ValueError(f"Unknown metric {experiment.metric!r}; one of: {known}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), not {alpha!r}")
    direction = DIRECTIONS[experiment.metric]
    binary = experiment.metric in BINARY_METRICS

    control_moments = _moments(control_totals)
    treatment_moments = _moments(treatment_totals)
    control = _arm(
        experiment.control_version,
        control_totals.users,
        control_totals.requests,
        control_moments,
        binary,
    )
    treatment = _arm(
        experiment.treatment_version,
        treatment_totals.users,
        treatment_totals.requests,
        treatment_moments,
        binary,
    )
    comparison = (
        _two_proportion(control_moments, treatment_moments)
        if binary
        else _welch(control_moments, treatment_moments)
    )
    srm = sample_ratio(control.users, treatment.users, experiment.traffic_split)
    recommendation, reason = _recommend(
        experiment.metric, direction, alpha, min_units, control, treatment, comparison, srm
    )
    return ExperimentResults(
        experiment=experiment.id,
        prompt_name=experiment.prompt_name,
        metric=experiment.metric,
        status=experiment.status,
        direction=direction,
        alpha=alpha,
        control=control,
        treatment=treatment,
        difference=comparison.difference,
        test="two_proportion_z" if binary else "welch_t",
        statistic=comparison.statistic,
        df=comparison.df,
        p_value=comparison.p_value,
        srm=srm,
        recommendation=recommendation,
        reason=reason,
    )


def sample_ratio(control: int, treatment: int, expected_treatment_share: float) -> SampleRatio:
    """Pearson's chi-square goodness of fit (1 df) of the units per arm against the split.

    The expected counts are `total * (1 - share)` and `total * share`. With a split of 0 or 1 an
    arm expects nobody: any unit there is a certain mismatch (p = 0), none a perfect fit (p = 1).
    """
    total = control + treatment
    share = expected_treatment_share
    p_value: float | None
    if total == 0:
        p_value = None
    elif share <= 0.0 or share >= 1.0:
        stray = treatment if share <= 0.0 else control
        p_value = 0.0 if stray else 1.0
    else:
        from scipy import stats

        result = stats.chisquare([control, treatment], f_exp=[total * (1 - share), total * share])
        p_value = float(result.pvalue)
    mismatch = p_value is not None and p_value < SRM_P_THRESHOLD
    return SampleRatio(share, control, treatment, p_value, mismatch)


@dataclass(frozen=True, slots=True)
class _Moments:
    """n, mean and sample variance (ddof 1) of one arm's per-unit means."""

    n: int
    mean: float | None
    var: float | None


@dataclass(frozen=True, slots=True)
class _Comparison:
    difference: Difference
    statistic: float | None
    df: float | None
    p_value: float | None
    why_no_p: str
    """When `p_value` is None: why, in words."""


def _moments(totals: ArmTotals) -> _Moments:
    n, squares = totals.with_value, totals.squared_deviations
    var = squares / (n - 1) if n >= 2 and squares is not None else None
    return _Moments(n, totals.mean, var)


def _arm(version: str, users: int, requests: int, m: _Moments, binary: bool) -> ArmResult:
    ci: Interval | None = None
    if m.mean is not None and m.var is not None:
        from scipy import stats

        if binary:
            # Wald: p ± z·√(p(1-p)/n), with p the mean of per-unit means (fractional for a unit
            # that reported several values).
            half = stats.norm.ppf(0.5 + CONFIDENCE / 2) * math.sqrt(
                max(m.mean * (1 - m.mean), 0.0) / m.n
            )
        else:
            half = stats.t.ppf(0.5 + CONFIDENCE / 2, m.n - 1) * math.sqrt(m.var / m.n)
        ci = (m.mean - float(half), m.mean + float(half))
    return ArmResult(version, users, requests, m.n, m.mean, ci)


def _difference(c: _Moments, t: _Moments, ci: Interval | None) -> Difference:
    if c.mean is None or t.mean is None:
        return Difference(None, None, None)
    absolute = t.mean - c.mean
    relative = absolute / c.mean if c.mean != 0 else None
    return Difference(absolute, ci, relative)


def _too_few(c: _Moments, t: _Moments) -> str:
    return (
        f"the test needs 2 units with a value in each arm; control has {c.n}, treatment has {t.n}"
    )


def _welch(c: _Moments, t: _Moments) -> _Comparison:
    """Welch's t-test (1947) with Satterthwaite's (1946) df, on per-unit means."""
    if c.mean is None or t.mean is None or c.var is None or t.var is None:
        return _Comparison(_difference(c, t, None), None, None, None, _too_few(c, t))
    diff = t.mean - c.mean
    vc, vt = c.var / c.n, t.var / t.n
    se = math.sqrt(vc + vt)
    if se == 0.0:
        # Both arms constant: the interval has zero width whatever the df. Equal constants are no
        # evidence of a difference (p = 1); different ones make t infinite, which we do not report.
        if diff == 0.0:
            return _Comparison(_difference(c, t, (diff, diff)), None, None, 1.0, "")
        why = (
            "Welch's t-test is undefined: every unit in each arm has the same value "
            f"(control {c.mean:.4g}, treatment {t.mean:.4g})"
        )
        return _Comparison(_difference(c, t, (diff, diff)), None, None, None, why)
    from scipy import stats

    df = (vc + vt) ** 2 / (vc**2 / (c.n - 1) + vt**2 / (t.n - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    statistic = diff / se
    p_value = float(2 * stats.t.sf(abs(statistic), df))
    difference = _difference(c, t, (diff - half, diff + half))
    return _Comparison(difference, statistic, df, p_value, "")


def _two_proportion(c: _Moments, t: _Moments) -> _Comparison:
    """Pooled two-proportion z-test; unpooled Wald interval for the difference (Agresti)."""
    if c.mean is None or t.mean is None or c.var is None or t.var is None:
        return _Comparison(_difference(c, t, None), None, None, None, _too_few(c, t))
    from scipy import stats

    diff = t.mean - c.mean
    z_crit = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    se = math.sqrt(max(c.mean * (1 - c.mean), 0.0) / c.n + max(t.mean * (1 - t.mean), 0.0) / t.n)
    difference = _difference(c, t, (diff - z_crit * se, diff + z_crit * se))
    pooled = (c.mean * c.n + t.mean * t.n) / (c.n + t.n)
    se_pooled = math.sqrt(max(pooled * (1 - pooled), 0.0) * (1 / c.n + 1 / t.n))
    if se_pooled == 0.0:
        # Pooled p is 0 or 1: every value in both arms is the same, so the arms are equal.
        return _Comparison(difference, None, None, 1.0, "")
    statistic = diff / se_pooled
    p_value = float(2 * stats.norm.sf(abs(statistic)))
    return _Comparison(difference, statistic, None, p_value, "")


def _recommend(
    metric: str,
    direction: Direction,
    alpha: float,
    min_units: int,
    control: ArmResult,
    treatment: ArmResult,
    comparison: _Comparison,
    srm: SampleRatio,
) -> tuple[Recommendation, str]:
    if srm.mismatch:
        observed = srm.treatment / (srm.control + srm.treatment)
        return "keep_running", (
            f"sample ratio mismatch: {observed:.1%} of users in treatment where "
            f"{srm.expected_treatment_share * 100:.3g}% were expected "
            f"(p = {_p(srm.p_value)}); check assignment and recording before trusting results"
        )
    short = [
        (name, arm.with_value)
        for name, arm in (("control", control), ("treatment", treatment))
        if arm.with_value < min_units
    ]
    if short:
        who = " and ".join(f"{name} has {n}" for name, n in short)
        noun = "user" if len(short) == 1 and short[0][1] == 1 else "users"
        return "keep_running", f"{who} {noun} with a value, fewer than the {min_units} needed"
    if comparison.p_value is None:
        return "keep_running", f"no p-value: {comparison.why_no_p}"
    if comparison.p_value >= alpha:
        return "keep_running", (
            f"no significant difference (p = {_p(comparison.p_value)} >= alpha {alpha:g})"
        )
    absolute = comparison.difference.absolute
    assert absolute is not None  # a p-value below alpha implies both means exist and differ
    verb = "raises" if absolute > 0 else "lowers"
    relative = comparison.difference.relative
    size = f"{abs(relative):.1%}" if relative is not None else f"{abs(absolute):.4g}"
    better = (absolute > 0) == (direction == "higher_is_better")
    effect = f"treatment {verb} {metric} by {size} (p = {_p(comparison.p_value)})"
    if better:
        return "promote_treatment", effect
    return "keep_control", f"{effect}; {direction.replace('_', ' ')}, so control stays"


def _p(p_value: float | None) -> str:
    return "n/a" if p_value is None else f"{p_value:.2g}"


def _arm_json(arm: ArmResult) -> dict[str, Any]:
    return {
        "version": arm.version,
        "users": arm.users,
        "requests": arm.requests,
        "with_value": arm.with_value,
        "mean": arm.mean,
        "ci95": _interval_json(arm.ci95),
    }


def _interval_json(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]
