"""Resolve + assign + render for one realistic prompt, on registries of 10 to 10,000 prompts.

Run: python benchmarks/bench_resolution.py   (pin it with `taskset -c 0` for steadier numbers)

The prompt has three variables and a ~1 KB template; every other prompt in the registry has three
versions. Each figure is the median of 7 rounds of 20,000 calls, in microseconds per call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.core.model import Experiment, PromptState, PromptVersion, RegistrySnapshot
from gateway.core.rendering import Message, coerce_variables, render
from gateway.core.resolution import resolve

NOW = datetime(2026, 11, 23, tzinfo=UTC)
BODY = (
    "You are the support agent of {{company}}. The user's timezone is {{timezone}}. "
    "Tools you may use: {{tools}}. "
) + "Answer briefly, politely and precisely; cite the knowledge base when you can. " * 12
VARIABLES = {"company": "Acme", "timezone": "Europe/Berlin", "tools": "search, refunds"}


def make_version(name: str, ver: str, number: int, active: str) -> PromptVersion:
    return PromptVersion(
        id=f"{name}-{ver}",
        name=name,
        version=ver,
        number=number,
        messages=(Message("system", BODY),),
        variables=("company", "timezone", "tools"),
        model="gpt-4o-mini",
        max_tokens=512,
        temperature=0.2,
        tags=(),
        created_at=NOW,
        created_by="bench",
        is_active=ver == active,
        is_tested=True,
    )


def make_snapshot(size: int, *, experiment: bool) -> RegistrySnapshot:
    prompts = {}
    for i in range(size):
        name = "support-agent" if i == 0 else f"prompt-{i}"
        versions = tuple(make_version(name, f"1.{n}.0", n + 1, "1.1.0") for n in range(3))
        experiments = ()
        if experiment and i == 0:
            experiments = (
                Experiment(
                    id="exp-1",
                    prompt_name=name,
                    control_version="1.1.0",
                    treatment_version="1.2.0",
                    traffic_split=0.5,
                    start=NOW - timedelta(days=1),
                    end=None,
                    metric="latency",
                    status="running",
                    created_at=NOW,
                    created_by="bench",
                ),
            )
        prompts[name] = PromptState(name, versions, "1.1.0", ("1.0.0",), experiments)
    return RegistrySnapshot(prompts, "1")


def measure(call: Callable[[], object], rounds: int = 7, calls: int = 20_000) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter_ns() - start) / calls / 1000)
    return statistics.median(samples)


def scenario(snapshot: RegistrySnapshot, **kwargs: object) -> Callable[[], object]:
    def call() -> object:
        got = resolve(snapshot, "support-agent", now=NOW, request_id="req-1", **kwargs)  # type: ignore[arg-type]
        values = coerce_variables(VARIABLES)
        return render(got.version.template, values, got.version.label)

    return call


def main() -> None:
    sizes = (10, 1_000, 10_000)
    rows = {
        "environment (production)": lambda s: scenario(s, environment="production"),
        "experiment, keyed by user": lambda s: scenario(
            make_snapshot(len(s.prompts), experiment=True),
            environment="production",
            user_key="user-42",
        ),
        "pinned version": lambda s: scenario(s, environment="production", pinned="1.0.0"),
    }
    snapshots = {n: make_snapshot(n, experiment=False) for n in sizes}
    print(f"template: {len(BODY)} bytes, 3 variables; µs per call (median of 7 x 20,000)")
    print(f"{'scenario':<28}" + "".join(f"{f'{n:,} prompts':>16}" for n in sizes))
    for label, build in rows.items():
        figures = [measure(build(snapshots[n])) for n in sizes]
        print(f"{label:<28}" + "".join(f"{f:>16.2f}" for f in figures))
    print("target: < 20 µs per call on one core, flat across registry sizes")


if __name__ == "__main__":
    main()
