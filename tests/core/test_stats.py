"""Experiment statistics (PRODUCT §11): every figure pinned against scipy/statsmodels on the same
per-user data, the decision rules checked by seeded simulation, and the edge cases named."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import orjson
import pytest
from scipy import stats as sps

from gateway.core.model import Experiment
from gateway.core.outcomes import UnitOutcome
from gateway.core.stats import ExperimentResults, analyze, sample_ratio
from tests.factories import experiment

REL = 1e-9
Values = Sequence[Sequence[float]]


def exp(metric: str, split: float = 0.5) -> Experiment:
    """A running experiment on `metric` with the given treatment share."""
    return dataclasses.replace(experiment(split=split), metric=metric)


def rows(variant: str, values: Values) -> list[UnitOutcome]:
    """One UnitOutcome per user from that user's raw values; each user made one more request."""
    return [
        UnitOutcome(variant, f"{variant}-{i}", len(v) + 1, float(sum(v)), len(v))  # type: ignore[arg-type]
        for i, v in enumerate(values)
    ]


def per_user_means(values: Values) -> np.ndarray:
    """The per-user means scipy sees: users without a value are left out."""
    return np.array([np.mean(v) for v in values if len(v)])


def run(
    metric: str,
    control: Values,
    treatment: Values,
    *,
    split: float = 0.5,
    alpha: float = 0.05,
    min_units: int = 100,
) -> ExperimentResults:
    """analyze() on raw per-user values."""
    units = rows("control", control) + rows("treatment", treatment)
    return analyze(exp(metric, split), units, alpha=alpha, min_units=min_units)


def gamma_users(rng: np.random.Generator, users: int, mean: float, cv: float) -> list[list[float]]:
    """Users with 0 to 4 gamma-distributed values each (about 1 in 5 without a value)."""
    shape = 1 / cv**2
    return [list(rng.gamma(shape, mean / shape, k)) for k in rng.integers(0, 5, users)]


def bernoulli_users(rng: np.random.Generator, users: int, p: float) -> list[list[float]]:
    """Users with exactly one 0/1 value each."""
    return [[float(x)] for x in rng.random(users) < p]


def approx(expected: float) -> object:
    """Equal to scipy's figure to 1e-9 (relative), or 1e-15 absolute near 0."""
    return pytest.approx(float(expected), rel=REL, abs=1e-15)


# --- Figures against scipy and statsmodels -----------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "mean", "cv", "lift"),
    [
        ("latency", 900.0, 0.9, 0.95),
        ("cost_per_task", 0.004, 0.6, 1.08),
        ("user_satisfaction", 3.2, 0.3, 1.04),
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_welch_matches_scipy(metric: str, mean: float, cv: float, lift: float, seed: int) -> None:
    """Welch's t, its p-value, df and the difference's interval equal scipy's ttest_ind."""
    rng = np.random.default_rng(seed)
    control, treatment = gamma_users(rng, 240, mean, cv), gamma_users(rng, 180, mean * lift, cv)
    result = run(metric, control, treatment)
    c, t = per_user_means(control), per_user_means(treatment)
    welch = sps.ttest_ind(t, c, equal_var=False)
    lo, hi = welch.confidence_interval(0.95)
    assert result.test == "welch_t"
    assert result.statistic == approx(welch.statistic)
    assert result.p_value == approx(welch.pvalue)
    assert result.df == approx(welch.df)
    assert result.difference.absolute == approx(t.mean() - c.mean())
    assert result.difference.ci95 == (approx(lo), approx(hi))
    assert result.difference.relative == approx((t.mean() - c.mean()) / c.mean())


@pytest.mark.parametrize("seed", [3, 4])
def test_arm_t_intervals_match_scipy(seed: int) -> None:
    """Each arm's mean and ci95 are the mean of per-user means and scipy's t interval of it."""
    rng = np.random.default_rng(seed)
    control, treatment = gamma_users(rng, 150, 700.0, 1.1), gamma_users(rng, 90, 650.0, 1.1)
    result = run("latency", control, treatment)
    for arm, values in ((result.control, control), (result.treatment, treatment)):
        means = per_user_means(values)
        lo, hi = sps.t.interval(0.95, len(means) - 1, loc=means.mean(), scale=sps.sem(means))
        assert arm.users == len(values)
        assert arm.with_value == len(means)
        assert arm.requests == sum(len(v) + 1 for v in values)
        assert arm.mean == approx(means.mean())
        assert arm.ci95 == (approx(lo), approx(hi))


def test_welch_matches_statsmodels() -> None:
    """statsmodels' unequal-variance t-test and its interval for the difference agree too."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttest_ind

    rng = np.random.default_rng(5)
    control, treatment = gamma_users(rng, 200, 3.0, 0.4), gamma_users(rng, 220, 3.3, 0.4)
    result = run("user_satisfaction", control, treatment)
    c, t = per_user_means(control), per_user_means(treatment)
    statistic, p_value, df = ttest_ind(t, c, usevar="unequal")
    lo, hi = CompareMeans(DescrStatsW(t), DescrStatsW(c)).tconfint_diff(usevar="unequal")
    assert (result.statistic, result.p_value, result.df) == (
        approx(statistic),
        approx(p_value),
        approx(df),
    )
    assert result.difference.ci95 == (approx(lo), approx(hi))


@pytest.mark.parametrize(("p_control", "p_treatment"), [(0.30, 0.36), (0.62, 0.55), (0.5, 0.5)])
def test_two_proportion_z_matches_chi2_contingency(p_control: float, p_treatment: float) -> None:
    """The pooled z-test's p-value equals the uncorrected chi-square on the 2x2 integer table."""
    rng = np.random.default_rng(6)
    control, treatment = (
        bernoulli_users(rng, 400, p_control),
        bernoulli_users(rng, 300, p_treatment),
    )
    result = run("task_completion", control, treatment)
    successes_c = int(sum(v[0] for v in control))
    successes_t = int(sum(v[0] for v in treatment))
    table = [[successes_c, 400 - successes_c], [successes_t, 300 - successes_t]]
    chi2, p_value, _, _ = sps.chi2_contingency(table, correction=False)
    assert result.test == "two_proportion_z"
    assert result.p_value == approx(p_value)
    assert result.statistic is not None
    assert result.statistic**2 == approx(chi2)


def test_two_proportion_z_matches_the_formula_with_fractional_user_means() -> None:
    """Several 0/1 values per user: z = (pt - pc) / sqrt(p(1-p)(1/nc + 1/nt)) on per-user means."""
    rng = np.random.default_rng(7)
    control = [list(rng.random(k) < 0.4) for k in rng.integers(0, 4, 300)]
    treatment = [list(rng.random(k) < 0.5) for k in rng.integers(0, 4, 250)]
    result = run("task_completion", control, treatment)
    c, t = per_user_means(control), per_user_means(treatment)
    assert not np.all((c == 0) | (c == 1))  # some users' means are fractional
    pooled = (c.sum() + t.sum()) / (len(c) + len(t))
    z = (t.mean() - c.mean()) / np.sqrt(pooled * (1 - pooled) * (1 / len(c) + 1 / len(t)))
    assert result.statistic == approx(z)
    assert result.p_value == approx(2 * sps.norm.sf(abs(z)))
    z95 = sps.norm.ppf(0.975)
    se = np.sqrt(c.mean() * (1 - c.mean()) / len(c) + t.mean() * (1 - t.mean()) / len(t))
    d = t.mean() - c.mean()
    assert result.difference.ci95 == (approx(d - z95 * se), approx(d + z95 * se))
    for arm, means in ((result.control, c), (result.treatment, t)):
        half = z95 * np.sqrt(means.mean() * (1 - means.mean()) / len(means))
        assert arm.ci95 == (approx(means.mean() - half), approx(means.mean() + half))


def test_proportions_match_statsmodels() -> None:
    """statsmodels' proportions_ztest, Wald difference interval and normal arm intervals agree."""
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        proportion_confint,
        proportions_ztest,
    )

    rng = np.random.default_rng(8)
    control, treatment = bernoulli_users(rng, 500, 0.42), bernoulli_users(rng, 450, 0.49)
    result = run("task_completion", control, treatment)
    sc, st = int(sum(v[0] for v in control)), int(sum(v[0] for v in treatment))
    z, p_value = proportions_ztest([st, sc], [450, 500])
    lo, hi = confint_proportions_2indep(st, 450, sc, 500, method="wald", compare="diff")
    assert (result.statistic, result.p_value) == (approx(z), approx(p_value))
    assert result.difference.ci95 == (approx(lo), approx(hi))
    for arm, successes, n in ((result.control, sc, 500), (result.treatment, st, 450)):
        arm_lo, arm_hi = proportion_confint(successes, n, alpha=0.05, method="normal")
        assert arm.ci95 == (approx(arm_lo), approx(arm_hi))


@pytest.mark.parametrize(
    ("control", "treatment", "split"),
    [(812, 344, 0.3), (5000, 4500, 0.5), (10, 11, 0.5), (1, 0, 0.25)],
)
def test_srm_matches_scipy_chisquare(control: int, treatment: int, split: float) -> None:
    """The SRM p-value is scipy's chisquare of users per arm against the configured split."""
    srm = sample_ratio(control, treatment, split)
    total = control + treatment
    expected = sps.chisquare([control, treatment], f_exp=[total * (1 - split), total * split])
    assert srm.p_value == approx(expected.pvalue)
    assert srm.mismatch is bool(expected.pvalue < 0.001)
    assert (srm.control, srm.treatment, srm.expected_treatment_share) == (control, treatment, split)


@pytest.mark.parametrize(
    ("split", "control", "treatment", "p_value"),
    [(0.0, 10, 0, 1.0), (0.0, 10, 1, 0.0), (1.0, 0, 7, 1.0), (1.0, 2, 7, 0.0), (0.5, 0, 0, None)],
)
def test_srm_degenerate_splits(
    split: float, control: int, treatment: int, p_value: float | None
) -> None:
    """A split of 0 or 1 is a perfect fit or a certain mismatch; no users means no p-value."""
    srm = sample_ratio(control, treatment, split)
    assert srm.p_value == p_value
    assert srm.mismatch is (p_value == 0.0)


# --- Decisions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "control_mean", "treatment_mean", "recommendation", "reason"),
    [
        ("latency", 1000.0, 800.0, "promote_treatment", "treatment lowers latency by "),
        ("latency", 800.0, 1000.0, "keep_control", "treatment raises latency by "),
        ("cost_per_task", 0.01, 0.008, "promote_treatment", "treatment lowers cost_per_task"),
        ("cost_per_task", 0.008, 0.01, "keep_control", "treatment raises cost_per_task"),
        ("user_satisfaction", 3.0, 3.6, "promote_treatment", "treatment raises user_satisf"),
        ("user_satisfaction", 3.6, 3.0, "keep_control", "treatment lowers user_satisfaction"),
    ],
)
def test_direction_decides_between_the_arms(
    metric: str, control_mean: float, treatment_mean: float, recommendation: str, reason: str
) -> None:
    """A significant difference promotes the arm the metric's direction prefers."""
    rng = np.random.default_rng(9)
    control = gamma_users(rng, 400, control_mean, 0.5)
    treatment = gamma_users(rng, 400, treatment_mean, 0.5)
    result = run(metric, control, treatment)
    assert result.p_value is not None and result.p_value < 1e-6
    assert result.recommendation == recommendation
    assert result.reason.startswith(reason)


@pytest.mark.parametrize(
    ("p_control", "p_treatment", "recommendation"),
    [(0.3, 0.45, "promote_treatment"), (0.45, 0.3, "keep_control")],
)
def test_proportion_direction(p_control: float, p_treatment: float, recommendation: str) -> None:
    """task_completion is higher-is-better: more completions promote, fewer keep control."""
    rng = np.random.default_rng(10)
    control, treatment = (
        bernoulli_users(rng, 600, p_control),
        bernoulli_users(rng, 600, p_treatment),
    )
    assert run("task_completion", control, treatment).recommendation == recommendation


def test_no_significant_difference_keeps_running() -> None:
    """p >= alpha keeps the experiment running and says so with both numbers."""
    rng = np.random.default_rng(11)
    result = run("latency", gamma_users(rng, 300, 500, 1), gamma_users(rng, 300, 500, 1))
    assert result.p_value is not None and result.p_value >= 0.05
    assert result.recommendation == "keep_running"
    assert result.reason == f"no significant difference (p = {result.p_value:.2g} >= alpha 0.05)"


def test_alpha_is_the_threshold() -> None:
    """The same data keep running at a stricter alpha than their p-value."""
    rng = np.random.default_rng(12)
    control, treatment = gamma_users(rng, 400, 1000, 0.8), gamma_users(rng, 400, 930, 0.8)
    loose = run("latency", control, treatment, alpha=0.2)
    assert loose.p_value is not None and 0.001 < loose.p_value < 0.2
    strict = run("latency", control, treatment, alpha=loose.p_value / 2)
    assert (loose.recommendation, strict.recommendation) == ("promote_treatment", "keep_running")


# --- Seeded simulation ---------------------------------------------------------------------------


def simulated_rows(
    variant: str, totals: np.ndarray, counts: np.ndarray, start: int = 0
) -> list[UnitOutcome]:
    """UnitOutcomes from per-user sums and counts (one request per value)."""
    return [
        UnitOutcome(variant, f"{variant}-{start + i}", int(n), float(s), int(n))  # type: ignore[arg-type]
        for i, (s, n) in enumerate(zip(totals, counts, strict=True))
    ]


def latency_arm(
    rng: np.random.Generator, users: int, mean: float, cv: float, variant: str
) -> list[UnitOutcome]:
    """Users with 1 to 3 gamma latencies each (mean `mean` ms, coefficient of variation `cv`).

    A sum of k gamma(shape, scale) values is gamma(k * shape, scale), so each user's total is
    drawn in one step.
    """
    shape = 1 / cv**2
    counts = rng.integers(1, 4, users)
    return simulated_rows(variant, rng.gamma(counts * shape, mean / shape), counts)


def completion_arm(
    rng: np.random.Generator, users: int, p: float, variant: str
) -> list[UnitOutcome]:
    """Users with one 0/1 task_completion value each."""
    counts = np.ones(users, dtype=np.int64)
    return simulated_rows(variant, (rng.random(users) < p).astype(float), counts)


def decided(result: ExperimentResults) -> bool:
    """The analysis picked an arm."""
    return result.recommendation != "keep_running"


def test_aa_experiments_pick_an_arm_in_about_alpha_of_runs() -> None:
    """A/A, 400 seeds x 300 users per arm, alpha 0.05: an arm is picked in 2% to 9% of runs.

    Both metric kinds: latency (gamma, cv 1, 1-3 values per user) and task_completion (p 0.3,
    one value per user). The band is about -2.7 and +3.7 binomial standard deviations around 5%.
    """
    latency = exp("latency")
    completion = exp("task_completion")
    picked_latency = picked_completion = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        units = latency_arm(rng, 300, 800, 1.0, "control") + latency_arm(
            rng, 300, 800, 1.0, "treatment"
        )
        picked_latency += decided(analyze(latency, units, alpha=0.05, min_units=100))
        units = completion_arm(rng, 300, 0.3, "control") + completion_arm(
            rng, 300, 0.3, "treatment"
        )
        picked_completion += decided(analyze(completion, units, alpha=0.05, min_units=100))
    assert 0.02 <= picked_latency / 400 <= 0.09
    assert 0.02 <= picked_completion / 400 <= 0.09


def test_a_ten_percent_lift_is_detected_in_most_runs() -> None:
    """A 10% improvement on 2,000 users per arm is promoted in at least 80% of 50 seeds.

    Latency: gamma, mean 800 ms vs 720 ms, cv 1.2 per value, 1-3 values per user (power about
    92%). task_completion: p 0.60 vs 0.66, one value per user (power about 97%).
    """
    latency = exp("latency")
    completion = exp("task_completion")
    promoted_latency = promoted_completion = 0
    for seed in range(50):
        rng = np.random.default_rng(1000 + seed)
        units = latency_arm(rng, 2000, 800, 1.2, "control") + latency_arm(
            rng, 2000, 720, 1.2, "treatment"
        )
        result = analyze(latency, units, alpha=0.05, min_units=100)
        promoted_latency += result.recommendation == "promote_treatment"
        units = completion_arm(rng, 2000, 0.60, "control") + completion_arm(
            rng, 2000, 0.66, "treatment"
        )
        result = analyze(completion, units, alpha=0.05, min_units=100)
        promoted_completion += result.recommendation == "promote_treatment"
    assert promoted_latency >= 40
    assert promoted_completion >= 40


@pytest.mark.parametrize(("lost", "mismatch"), [(0.10, True), (0.0, False)])
def test_a_treatment_arm_that_loses_users_is_a_sample_ratio_mismatch(
    lost: float, mismatch: bool
) -> None:
    """A 50/50 split of 10,000 users whose treatment silently loses 10% of its users is flagged."""
    rng = np.random.default_rng(13)
    in_treatment = rng.random(10_000) < 0.5
    kept = in_treatment & (rng.random(10_000) >= lost)
    n_control, n_treatment = int((~in_treatment).sum()), int(kept.sum())
    units = latency_arm(rng, n_control, 1000, 0.5, "control") + latency_arm(
        rng, n_treatment, 700, 0.5, "treatment"
    )
    result = analyze(exp("latency"), units, alpha=0.05, min_units=100)
    assert result.srm.mismatch is mismatch
    assert result.srm.control + result.srm.treatment == n_control + n_treatment
    if mismatch:
        assert result.recommendation == "keep_running"
        assert result.reason.startswith("sample ratio mismatch: ")
        assert "% of users in treatment where 50% were expected (p = " in result.reason
    else:
        assert result.recommendation == "promote_treatment"


# --- Edge cases ----------------------------------------------------------------------------------


def test_empty_experiment() -> None:
    """No units at all: every figure is null and the experiment keeps running."""
    result = analyze(exp("latency"), [], alpha=0.05, min_units=100)
    for arm in (result.control, result.treatment):
        assert (arm.users, arm.requests, arm.with_value, arm.mean, arm.ci95) == (
            0,
            0,
            0,
            None,
            None,
        )
    assert result.difference == dataclasses.replace(result.difference, absolute=None)
    assert (result.difference.ci95, result.difference.relative, result.p_value) == (None,) * 3
    assert (result.srm.p_value, result.srm.mismatch) == (None, False)
    assert result.recommendation == "keep_running"
    assert result.reason == (
        "control has 0 and treatment has 0 users with a value, fewer than the 100 needed"
    )
    orjson.dumps(result.to_json())


def test_one_arm_empty() -> None:
    """Control only: its mean and interval exist, the comparison is null, the split mismatches."""
    rng = np.random.default_rng(14)
    result = run("user_satisfaction", gamma_users(rng, 200, 3, 0.3), [])
    assert result.control.mean is not None and result.control.ci95 is not None
    assert (result.treatment.users, result.treatment.mean, result.treatment.ci95) == (0, None, None)
    assert (result.difference.absolute, result.difference.ci95, result.p_value) == (None,) * 3
    assert result.srm.mismatch
    assert result.recommendation == "keep_running"


def test_users_without_a_value_count_as_exposed_only() -> None:
    """Users without a value count in users, requests and SRM, not in with_value or the mean."""
    result = run("user_satisfaction", [[4.0], [2.0], []], [[], []], min_units=1)
    assert (result.control.users, result.control.requests, result.control.with_value) == (3, 5, 2)
    assert result.control.mean == 3.0
    assert (result.treatment.users, result.treatment.requests) == (2, 2)
    assert (result.treatment.with_value, result.treatment.mean) == (0, None)
    assert result.reason == "treatment has 0 users with a value, fewer than the 1 needed"


def test_fewer_than_min_units_keeps_running_even_when_significant() -> None:
    """40 of 300 treatment users with a value keep the experiment running, however clear the gap."""
    rng = np.random.default_rng(15)
    treatment = [[200.0 + i] for i in range(40)] + [[] for _ in range(260)]
    result = run("latency", gamma_users(rng, 300, 1000, 0.2), treatment)
    assert result.p_value is not None and result.p_value < 1e-10
    assert result.recommendation == "keep_running"
    assert result.reason == "treatment has 40 users with a value, fewer than the 100 needed"


def test_one_user_per_arm_has_means_but_no_test() -> None:
    """With one user with a value per arm the means and difference exist; intervals and p do not."""
    result = run("latency", [[100.0, 300.0]], [[150.0]], min_units=0)
    assert (result.control.mean, result.treatment.mean) == (200.0, 150.0)
    assert (result.control.ci95, result.treatment.ci95) == (None, None)
    assert (result.difference.absolute, result.difference.relative) == (-50.0, -0.25)
    assert (result.difference.ci95, result.p_value, result.statistic) == (None, None, None)
    assert result.recommendation == "keep_running"
    assert result.reason == (
        "no p-value: the test needs 2 units with a value in each arm; "
        "control has 1, treatment has 1"
    )


@pytest.mark.parametrize(
    ("metric", "value"), [("user_satisfaction", 4.0), ("task_completion", 1.0)]
)
def test_all_values_equal(metric: str, value: float) -> None:
    """Both arms constant and equal: difference 0 with interval [0, 0], p = 1, keep running."""
    result = run(metric, [[value]] * 150, [[value]] * 150)
    assert (result.difference.absolute, result.difference.ci95) == (0.0, (0.0, 0.0))
    assert result.difference.relative == 0.0
    assert result.p_value == 1.0
    assert result.control.ci95 == (value, value)
    assert result.recommendation == "keep_running"
    assert result.reason == "no significant difference (p = 1 >= alpha 0.05)"


def test_constant_but_different_arms_have_no_welch_p_value() -> None:
    """Two constant arms that differ make Welch's t infinite: p is null and the experiment runs."""
    result = run("user_satisfaction", [[3.0]] * 150, [[4.0]] * 150)
    assert (result.difference.absolute, result.difference.ci95) == (1.0, (1.0, 1.0))
    assert (result.p_value, result.statistic, result.df) == (None, None, None)
    assert result.recommendation == "keep_running"
    assert result.reason.startswith("no p-value: Welch's t-test is undefined")


def test_control_mean_zero_has_no_relative_difference() -> None:
    """Control costing nothing: relative is null and the reason gives the absolute change."""
    rng = np.random.default_rng(16)
    control = [[0.0]] * 200
    treatment = [list(rng.gamma(4, 0.0005, 2)) for _ in range(200)]
    result = run("cost_per_task", control, treatment)
    assert result.control.mean == 0.0
    assert result.difference.absolute is not None and result.difference.absolute > 0
    assert result.difference.relative is None
    assert result.to_json()["difference"]["relative"] is None
    assert result.recommendation == "keep_control"
    assert result.reason.startswith(
        f"treatment raises cost_per_task by {result.difference.absolute:.4g} (p = "
    )
    assert result.reason.endswith("; lower is better, so control stays")


def test_unknown_metric_and_bad_alpha_are_refused() -> None:
    """An unknown metric, an alpha outside (0, 1) or a stray variant raise ValueError."""
    with pytest.raises(ValueError, match="Unknown metric 'clicks'"):
        analyze(exp("clicks"), [], alpha=0.05, min_units=100)
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        analyze(exp("latency"), [], alpha=1.0, min_units=100)
    stray = UnitOutcome("holdout", "u1", 1, 1.0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="holdout"):
        analyze(exp("latency"), [stray], alpha=0.05, min_units=100)


# --- The JSON and the costs ----------------------------------------------------------------------


def test_json_has_the_section_11_shape() -> None:
    """to_json() has §11's names exactly (plus with_value, statistic, df) and plain JSON values."""
    rng = np.random.default_rng(17)
    result = run(
        "task_completion",
        bernoulli_users(rng, 812, 0.61),
        bernoulli_users(rng, 344, 0.67),
        split=0.3,
    )
    body = orjson.loads(orjson.dumps(result.to_json()))
    assert list(body) == [
        "experiment",
        "prompt_name",
        "metric",
        "status",
        "direction",
        "alpha",
        "control",
        "treatment",
        "difference",
        "test",
        "statistic",
        "df",
        "p_value",
        "srm",
        "recommendation",
        "reason",
    ]
    assert body["experiment"] == "exp-1"
    assert (body["metric"], body["direction"], body["test"]) == (
        "task_completion",
        "higher_is_better",
        "two_proportion_z",
    )
    assert body["control"].keys() == {"version", "users", "requests", "with_value", "mean", "ci95"}
    assert body["control"]["version"] == "1.0.0"
    assert body["treatment"]["users"] == 344
    assert len(body["treatment"]["ci95"]) == 2
    assert body["difference"].keys() == {"absolute", "ci95", "relative"}
    assert body["srm"] == {
        "expected_treatment_share": 0.3,
        "observed": {"control": 812, "treatment": 344},
        "p_value": result.srm.p_value,
        "mismatch": False,
    }
    assert body["df"] is None
    assert body["recommendation"] in {"keep_running", "promote_treatment", "keep_control"}


def test_a_hundred_thousand_units_take_well_under_a_second() -> None:
    """Results over 100,000 units come back in under half a second (scipy already imported)."""
    rng = np.random.default_rng(18)
    units = latency_arm(rng, 50_000, 800, 1.0, "control") + latency_arm(
        rng, 50_000, 800, 1.0, "treatment"
    )
    analyze(exp("latency"), units[:10], alpha=0.05, min_units=100)  # scipy's import, once
    started = time.perf_counter()
    result = analyze(exp("latency"), units, alpha=0.05, min_units=100)
    assert time.perf_counter() - started < 0.5
    assert result.control.users + result.treatment.users == 100_000


def test_importing_the_module_does_not_import_scipy_or_numpy() -> None:
    """The gateway imports the core at start-up; scipy and numpy load only when results are due."""
    code = (
        "import sys, gateway.core.stats; "
        "print(sorted(m for m in ('scipy', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
