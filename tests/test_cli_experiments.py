"""`gateway experiments results` and `conclude`, as a user runs them on a real SQLite store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.outcomes import Exposure, Feedback
from gateway.stores.sqlite import SQLiteStore
from tests.conftest import Gateway
from tests.outcome_rows import record_outcomes

MOCK = {"GATEWAY_UPSTREAM_URL": "mock"}


def _setup(gateway: Gateway) -> None:
    gateway("prompts", "push")
    gateway("prompts", "promote", "support-agent", "1.0.0", "--force")
    gateway(
        "experiments",
        "create",
        "--id",
        "tc",
        "--prompt",
        "support-agent",
        "--control",
        "1.0.0",
        "--treatment",
        "1.1.0",
        "--split",
        "0.5",
        "--metric",
        "task_completion",
    )


def _record(project: Path, *, control_rate: float, treatment_rate: float, users: int) -> None:
    """`users` users per arm, one call each, with task_completion at the given rates."""
    at = datetime(2026, 11, 29, tzinfo=UTC)
    exposures, feedback = [], []
    for arm, version, rate in (
        ("control", "1.0.0", control_rate),
        ("treatment", "1.1.0", treatment_rate),
    ):
        for i in range(users):
            request_id = f"req_{arm}_{i}"
            exposures.append(
                Exposure(
                    request_id, "tc", arm, version, f"{arm}-user-{i}", at, 120.0, 10, 5, 0.0001, 200
                )  # type: ignore[arg-type]
            )
            feedback.append(
                Feedback(request_id, "task_completion", 1.0 if i < rate * users else 0.0)
            )
    asyncio.run(record_outcomes(SQLiteStore(project / "gateway.db"), exposures, feedback))


def test_results_show_both_arms_and_the_verdict(gateway: Gateway, project: Path) -> None:
    """--json gives the §11 object; the table shows both arms, a chart and the verdict."""
    _setup(gateway)
    _record(project, control_rate=0.3, treatment_rate=0.6, users=200)
    results = gateway("experiments", "results", "tc", "--json")
    assert results["test"] == "two_proportion_z"
    assert (results["control"]["users"], results["treatment"]["users"]) == (200, 200)
    assert results["control"]["mean"] == 0.3 and results["treatment"]["mean"] == 0.6
    assert results["recommendation"] == "promote_treatment"
    text = gateway("experiments", "results", "tc").stdout
    assert "control" in text and "treatment" in text and "●" in text
    assert "promote_treatment:" in text


def test_results_of_an_unknown_experiment_is_one_line(gateway: Gateway) -> None:
    """An unknown id exits 1 with a one-line reason."""
    gateway("prompts", "push")
    failed = gateway("experiments", "results", "nope", ok=False)
    assert "Experiment 'nope' does not exist" in failed.output
    assert len(failed.output.strip().splitlines()) == 1


def test_conclude_promotes_the_winner_through_the_gate(gateway: Gateway, project: Path) -> None:
    """Untested, the winner is refused and the experiment keeps running; tested, it is promoted
    and the experiment stopped, in one audit entry."""
    _setup(gateway)
    _record(project, control_rate=0.3, treatment_rate=0.6, users=200)
    refused = gateway("experiments", "conclude", "tc", ok=False)
    assert "no test run" in refused.output
    assert gateway("experiments", "list", "--json")[0]["status"] == "running"
    gateway("prompts", "test", "support-agent", "--version", "1.1.0", env=MOCK)
    done = gateway("experiments", "conclude", "tc", "--json")
    assert done["promoted"] is True and done["experiment"]["status"] == "stopped"
    assert gateway("prompts", "resolve", "support-agent", "--json")["version"] == "1.1.0"
    entry = gateway("audit", "--json")[-1]
    assert (entry["action"], entry["experiment_id"], entry["after"]["active"]) == (
        "experiment.conclude",
        "tc",
        "1.1.0",
    )


def test_conclude_without_a_winner_only_stops(gateway: Gateway, project: Path) -> None:
    """No significant difference: stopped, the active version stays."""
    _setup(gateway)
    _record(project, control_rate=0.5, treatment_rate=0.5, users=200)
    done = gateway("experiments", "conclude", "tc", "--json")
    assert done["promoted"] is False and done["results"]["recommendation"] == "keep_running"
    assert gateway("prompts", "resolve", "support-agent", "--json")["version"] == "1.0.0"
