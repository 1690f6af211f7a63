"""What the console's pages show, shaped from the registry: pure functions of a snapshot, the
settings and the time, so each page's numbers are tested without a browser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from gateway.core.model import (
    ENVIRONMENTS,
    AuditEntry,
    Environment,
    Experiment,
    PromptState,
    RegistrySnapshot,
)
from gateway.core.resolution import Overrides, resolve
from gateway.core.stats import ExperimentResults
from gateway.core.trend import TrendPoint
from gateway.errors import GatewayError
from gateway.ui.charts import Bar, Point, interval_chart, series_chart


@dataclass(frozen=True, slots=True)
class Served:
    """What one environment serves of one prompt now."""

    environment: Environment
    version: str | None
    """The version, or None when it is an experiment's two versions or nothing."""
    how: str
    """Why: `environment`, `override`, `experiment`, or the error a request would get."""
    experiment: Experiment | None = None


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One row of the Prompts page."""

    state: PromptState
    served: tuple[Served, ...]
    experiment: Experiment | None
    last_change: AuditEntry | None


def served(
    snapshot: RegistrySnapshot,
    name: str,
    environment: Environment,
    overrides: Overrides,
    now: datetime,
) -> Served:
    """What a request for `name` gets in `environment` now, resolved by the request path's own
    `resolve` (no pinned version, no user key): during an experiment, both its versions."""
    try:
        got = resolve(
            snapshot,
            name,
            environment=environment,
            overrides=overrides,
            request_id="console",
            now=now,
        )
    except GatewayError as exc:
        return Served(environment, None, f"{exc.status} {exc.code}: {exc.message}")
    if got.resolution == "experiment":
        return Served(environment, None, "experiment", got.experiment)
    return Served(environment, got.version.version, got.resolution)


def prompt_rows(
    snapshot: RegistrySnapshot,
    overrides: Overrides,
    own: Environment,
    now: datetime,
    last_changes: dict[str, AuditEntry],
) -> list[PromptRow]:
    """The Prompts page: every prompt by name, with what each environment serves."""
    rows = []
    for name in sorted(snapshot.prompts):
        state = snapshot.prompts[name]
        if not state.versions:
            continue
        cells = tuple(
            served(snapshot, name, env, overrides.seen_by(env, own), now) for env in ENVIRONMENTS
        )
        rows.append(PromptRow(state, cells, state.experiment_running(now), last_changes.get(name)))
    return rows


UNITS = {
    "latency": "ms",
    "cost_per_task": "USD",
    "user_satisfaction": "rating 0-5",
    "task_completion": "0/1, a share",
}
"""The unit of each metric's values (PRODUCT §11): means and differences are in it."""


def metric_unit(metric: str) -> str:
    """The unit of `metric`'s values, e.g. `ms`; empty for a metric this table does not know."""
    return UNITS.get(metric, "")


def _titled(metric: str) -> str:
    unit = metric_unit(metric)
    return f"{metric} ({unit})" if unit else metric


def results_chart(results: ExperimentResults) -> str:
    """Each arm's mean with its 95% interval, and the difference with its interval, as SVG."""
    c, t, d = results.control, results.treatment, results.difference
    bars = [
        Bar(f"control {c.version}", "control", c.mean, *(c.ci95 or (None, None))),
        Bar(f"treatment {t.version}", "treatment", t.mean, *(t.ci95 or (None, None))),
    ]
    means = interval_chart(f"Mean {_titled(results.metric)} per variant, 95% interval", bars)
    diff = interval_chart(
        f"Difference in {_titled(results.metric)}, treatment minus control, 95% interval",
        [Bar("difference", "difference", d.absolute, *(d.ci95 or (None, None)))],
        zero=True,
    )
    return means + "\n" + diff


def trace_link(template: str | None, *, request_id: str, trace_id: str | None = None) -> str | None:
    """The tracing backend's URL for this call, when `ui.trace_url` is set and names an id the
    call has; None otherwise."""
    if template is None:
        return None
    if "{trace_id}" in template and trace_id is None:
        return None
    return template.replace("{trace_id}", quote(trace_id or "", safe="")).replace(
        "{request_id}", quote(request_id, safe="")
    )


ABSENT = "—"
"""What the audit page shows for a key that one side of a change does not have."""
SHARES = frozenset({"pass_rate", "traffic_split"})
"""Audit keys whose values are shares (0-1), shown as percentages."""


def readable(value: Any, key: str = "") -> str:
    """An audit value in words: None -> `not set`, booleans -> `yes`/`no`, a share (`SHARES`)
    -> a percentage, other numbers to 4 significant digits, a mapping -> `key: value, ...`, a
    list -> `a, b`; anything else as its text."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and key in SHARES:
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {readable(v, str(k))}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(readable(v, key) for v in value) or "none"
    return str(value)


def audit_change(entry: AuditEntry) -> list[tuple[str, str, str]]:
    """The keys an audit entry changed: (key, before, after) in words (`readable`; ABSENT for
    a side without the key), keys in order of first mention."""
    before, after = dict(entry.before or {}), dict(entry.after or {})
    keys = list(dict.fromkeys([*before, *after]))
    return [
        (
            k,
            readable(before[k], k) if k in before else ABSENT,
            readable(after[k], k) if k in after else ABSENT,
        )
        for k in keys
    ]


def over_time_chart(metric: str, points: list[TrendPoint]) -> str:
    """The difference over time (`trend.difference_over_time`) as SVG, one point per period."""
    return series_chart(
        f"Difference in mean {_titled(metric)} over time, treatment minus control, 95% interval",
        [Point(_period_label(p.period), p.difference, p.low, p.high) for p in points],
    )


def _period_label(period: str) -> str:
    """`2026-03-01T14` -> `2026-03-01 14:00`; a day stays as it is."""
    return f"{period[:10]} {period[11:13]}:00" if len(period) > 10 else period


def wrote_names(cookie: str | None, limit: int) -> list[str]:
    """The prompt names a console's `wrote` cookie holds (at most `limit`, empty when none)."""
    if not cookie:
        return []
    names = [unquote(part) for part in cookie.split(",") if part]
    return list(dict.fromkeys(names))[:limit]


def wrote_cookie(names: list[str]) -> str:
    """The cookie value for `names`: each percent-encoded, comma-separated."""
    return ",".join(quote(n, safe="") for n in names)


def serves_now(cell: Served) -> str:
    """What requests of one environment get now, in words (for the notice after an action):
    `production serves 1.1.0`, `... (an override pins it)`, an experiment's split, or nothing."""
    env = cell.environment
    if cell.experiment is not None:
        e = cell.experiment
        return (
            f"{env} still splits its traffic in experiment {e.id}: {e.control_version} to "
            f"{1 - e.traffic_split:.0%} of users, {e.treatment_version} to {e.traffic_split:.0%}"
        )
    if cell.version is not None:
        pinned = " (an override pins it)" if cell.how == "override" else ""
        return f"{env} serves {cell.version}{pinned}"
    return f"{env} serves nothing ({cell.how})"


def activation_notice(done: str, version: str, cell: Served) -> str:
    """The notice after `done` (e.g. `Promoted 1.1.0`, `Rolled back from 1.1.0 to 1.0.0`) made
    `version` active, given what the environment `cell` serves now: `production serves it
    now` only when its requests really get `version`."""
    if cell.version == version and cell.how == "environment":
        return f"{done}: {cell.environment} serves it now."
    return f"{done}: it is the active version, but {serves_now(cell)}."


def test_notice(version: str, results: Any, threshold: float) -> str:
    """The notice after a test run of `version` (`results`: the stored TestResults)."""
    passed = "yes" if results.pass_rate >= threshold else "no"
    return (
        f"Tests of {version} ran: {results.passed} of {results.total} passed "
        f"({results.pass_rate:.0%}); passed its tests: {passed} (threshold {threshold:.0%})."
    )
