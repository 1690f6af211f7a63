"""Tables and text for people, drawn from the JSON values a backend answers (never from store
objects), so a command draws the same whichever backend answered."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from gateway.core.versions import parse_version

Json = Mapping[str, Any]


def _time(value: str, pattern: str) -> str:
    return datetime.fromisoformat(value).strftime(pattern)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


# ---- prompts ---------------------------------------------------------------------------------


def push_table(results: Sequence[Json]) -> Table:
    """What a push did, one row per version."""
    table = Table("name", "version", "status", "file")
    for r in results:
        table.add_row(r["name"], r["version"], r["status"], r["file"])
    return table


def prompts_table(rows: Sequence[Json]) -> Table:
    """`prompts list`: a row per prompt."""
    table = Table("name", "versions", "newest", "newest tested", "active", "experiment")
    for row in rows:
        table.add_row(
            *(
                _dash(row[k])
                for k in ("name", "versions", "newest", "newest_tested", "active", "experiment")
            )
        )
    return table


def versions_table(versions: Iterable[Json]) -> Table:
    """A prompt's versions, lowest semantic version first."""
    table = Table("version", "number", "active", "tested", "pass rate", "model", "created", "by")
    for v in sorted(versions, key=lambda v: parse_version(v["version"])):
        results = v["test_results"]
        table.add_row(
            v["version"],
            str(v["number"]),
            "yes" if v["is_active"] else "",
            "yes" if v["is_tested"] else "",
            f"{results['pass_rate']:.0%}" if results else "-",
            v["model"] or "-",
            _time(v["created_at"], "%Y-%m-%d %H:%M"),
            v["created_by"],
        )
    return table


def version_text(v: Json) -> Text:
    """One version in full: its parameters, last test run and messages."""
    text = Text.assemble(
        (f"{v['name']}@{v['version']}", "bold"),
        f"  number {v['number']}  {'active' if v['is_active'] else 'inactive'}  "
        f"{'tested' if v['is_tested'] else 'untested'}\n",
        f"model={v['model']} temperature={v['temperature']} max_tokens={v['max_tokens']} "
        f"client_system={v['client_system']} tags={','.join(v['tags']) or '-'}\n",
        f"variables: {', '.join(v['variables']) or '-'}\n",
        f"created {v['created_at']} by {v['created_by']}",
    )
    results = v["test_results"]
    if results:
        text.append(
            f"\nlast test run: {results['passed']}/{results['total']} passed "
            f"({results['pass_rate']:.0%})"
        )
    for message in v["messages"]:
        text.append("\n\n")
        text.append(message["role"], "bold")
        text.append("\n" + message["content"])
    return text


def messages_text(rendered: Json) -> Text:
    """A rendering: the version, then each message's role and content."""
    text = Text(f"{rendered['name']}@{rendered['version']}", "dim")
    for message in rendered["messages"]:
        text.append("\n")
        text.append(message["role"], "bold")
        text.append("\n" + message["content"])
    return text


def test_table(test_ids: Sequence[str], run: Json) -> Table:
    """A test run: each test, passed or failed with the expectations it missed."""
    misses: dict[str, list[str]] = {}
    for failure in run["failures"]:
        misses.setdefault(failure["test_id"], []).append(
            f"{failure['expectation']}: {failure['detail']}"
        )
    table = Table("test", "result", "failed expectations")
    for test_id in test_ids:
        missed = misses.get(test_id)
        table.add_row(test_id, "FAIL" if missed else "pass", "; ".join(missed or ()) or "-")
    return table


# ---- experiments -----------------------------------------------------------------------------


def experiment_status(e: Json, now: datetime) -> str:
    """running, scheduled (not started yet), ended (past its end) or stopped."""
    if e["running_now"]:
        return "running"
    if e["status"] != "running":
        return str(e["status"])
    return "scheduled" if datetime.fromisoformat(e["start"]) > now else "ended"


def experiments_table(experiments: Sequence[Json], now: datetime) -> Table:
    """`experiments list`: a row per experiment."""
    table = Table(
        "id", "prompt", "control", "treatment", "split", "status", "start", "end", "metric"
    )
    for e in experiments:
        table.add_row(
            e["id"],
            e["prompt_name"],
            e["control_version"],
            e["treatment_version"],
            f"{e['traffic_split']:g}",
            experiment_status(e, now),
            _time(e["start"], "%Y-%m-%d %H:%M"),
            _time(e["end"], "%Y-%m-%d %H:%M") if e["end"] else "-",
            e["metric"],
        )
    return table


def results_table(results: Json) -> Table:
    """Both arms side by side, and the difference."""
    metric = results["metric"]
    table = Table("", "version", "users", "requests", "with value", "mean", "95% interval")
    for name in ("control", "treatment"):
        arm = results[name]
        table.add_row(
            name,
            arm["version"],
            str(arm["users"]),
            str(arm["requests"]),
            str(arm["with_value"]),
            figure(arm["mean"], metric),
            interval(arm["ci95"], metric),
        )
    diff = results["difference"]
    relative = f" ({diff['relative']:+.1%})" if diff["relative"] is not None else ""
    table.add_row(
        "difference",
        "",
        "",
        "",
        "",
        figure(diff["absolute"], metric) + relative,
        interval(diff["ci95"], metric),
    )
    srm = results["srm"]
    table.caption = (
        f"{metric} ({results['direction'].replace('_', ' ')}), {results['test']}, "
        f"p = {figure(results['p_value'])}, alpha {results['alpha']:g}; sample ratio p = "
        f"{figure(srm['p_value'])}{' MISMATCH' if srm['mismatch'] else ''}"
    )
    return table


def results_chart(results: Json, width: int = 48) -> str:
    """Each arm's mean (●) and 95% interval (├─┤) on one shared scale, as text."""
    arms = [(name, results[name]) for name in ("control", "treatment")]
    bounds: list[float] = [b for _, arm in arms if arm["ci95"] is not None for b in arm["ci95"]]
    bounds += [arm["mean"] for _, arm in arms if arm["mean"] is not None]
    if not bounds:
        return "(no values yet)"
    low, high = min(bounds), max(bounds)
    span = (high - low) or 1.0

    def col(value: float) -> int:
        return round((value - low) / span * (width - 1))

    lines = []
    for name, arm in arms:
        row = [" "] * width
        if arm["ci95"] is not None:
            a, b = col(arm["ci95"][0]), col(arm["ci95"][1])
            for i in range(a, b + 1):
                row[i] = "─"
            row[a], row[b] = "├", "┤"
        if arm["mean"] is not None:
            row[col(arm["mean"])] = "●"
        lines.append(f"{name:>9} {''.join(row)}")
    left, right = figure(low, results["metric"]), figure(high, results["metric"])
    lines.append(f"{'':>9} {left:<{width // 2}}{right:>{width - width // 2}}")
    return "\n".join(lines)


def figure(value: float | None, metric: str = "") -> str:
    """A statistic for people: 4 significant digits; costs in dollars, never 1.2e-05."""
    if value is None:
        return "-"
    if metric == "cost_per_task":  # USD: fixed decimals
        return f"${value:,.6f}" if abs(value) < 1 else f"${value:,.2f}"
    return f"{value:.4g}"


def interval(bounds: Sequence[float] | None, metric: str = "") -> str:
    """`[low, high]`, or `-` when there is none."""
    if bounds is None:
        return "-"
    return f"[{figure(bounds[0], metric)}, {figure(bounds[1], metric)}]"


# ---- audit -----------------------------------------------------------------------------------


def audit_table(entries: Sequence[Json]) -> Table:
    """Who changed what; fits 100 columns (the full before/after documents are in --json)."""
    table = Table("at (UTC)", "actor", "action", "prompt", "target", "change", box=box.SIMPLE)
    for e in entries:
        table.add_row(
            _time(e["at"], "%m-%d %H:%M:%S"),
            clip(e["actor"], 12),
            e["action"].replace("version.", "").replace("experiment.", "exp."),
            clip(e["prompt_name"], 18),
            clip(e["version"] or e["experiment_id"] or "-", 14),
            change(e) + (" (forced)" if e["forced"] else ""),
        )
    return table


def change(entry: Json) -> str:
    """What an audit entry changed, in a few words: `active 1.0.0 -> 1.1.0`."""
    before, after = dict(entry["before"] or {}), dict(entry["after"] or {})
    changed = [
        f"{key} {before.get(key, '-')} -> {after[key]}"
        for key in after
        if key in before and before[key] != after[key]
    ]
    if not changed and after:
        changed = [f"{key}={value}" for key, value in after.items() if key != "id"]
    return clip("; ".join(changed) or "-", 28)


def clip(text: str, width: int) -> str:
    """`text`, cut to `width` characters with an ellipsis."""
    return text if len(text) <= width else text[: width - 1] + "…"


# ---- adoption --------------------------------------------------------------------------------


def candidates_table(rows: Sequence[Json]) -> Table:
    """`adoption candidates`: a row per candidate, its template clipped (all of it in --json)."""
    table = Table(
        "id", "calls", "texts", "models", "variables", "example", "template", box=box.SIMPLE
    )
    for row in rows:
        example = row["examples"][0] if row["examples"] else {}
        table.add_row(
            row["id"] + ("" if row["adoptable"] else " (!)"),
            str(row["count"]),
            str(row["texts"]),
            ", ".join(row["models"]) or "-",
            ", ".join(row["variables"]) or "-",
            clip(", ".join(f"{k}={v}" for k, v in example.items()) or "-", 30),
            clip(" ".join(row["template"].split()), 60),
        )
    return table
