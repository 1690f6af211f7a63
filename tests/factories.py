"""Builders for registry values, so tests state only what matters to them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.core.model import Experiment, PromptState, PromptVersion, RegistrySnapshot, TestResults
from gateway.core.rendering import Message

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def version(
    name: str = "support-agent",
    ver: str = "1.0.0",
    *,
    number: int = 1,
    content: str = "You help customers of {{company}}.",
    active: bool = False,
    tested: bool = False,
    pass_rate: float | None = None,
) -> PromptVersion:
    """A stored version with sensible defaults."""
    results = None
    if pass_rate is not None:
        passed = round(pass_rate * 10)
        results = TestResults(total=10, passed=passed, failed=10 - passed, pass_rate=pass_rate)
    return PromptVersion(
        id=f"id-{name}-{ver}",
        name=name,
        version=ver,
        number=number,
        messages=(Message("system", content),),
        variables=("company",) if "{{company}}" in content else (),
        model="gpt-4o-mini",
        max_tokens=256,
        temperature=0.2,
        tags=(),
        created_at=T0,
        created_by="test",
        is_active=active,
        is_tested=tested,
        test_results=results,
    )


def experiment(
    *,
    id: str = "exp-1",
    prompt: str = "support-agent",
    control: str = "1.0.0",
    treatment: str = "1.1.0",
    split: float = 0.5,
    start: datetime = T0,
    end: datetime | None = None,
    status: str = "running",
) -> Experiment:
    """A running experiment between two versions."""
    return Experiment(
        id=id,
        prompt_name=prompt,
        control_version=control,
        treatment_version=treatment,
        traffic_split=split,
        start=start,
        end=end,
        metric="user_satisfaction",
        status=status,  # type: ignore[arg-type]
        created_at=start - timedelta(minutes=1),
        created_by="test",
    )


def snapshot(*states: PromptState) -> RegistrySnapshot:
    """A snapshot holding the given prompts."""
    return RegistrySnapshot({s.name: s for s in states}, "1")
