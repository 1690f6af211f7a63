"""Matching cost of adopted prompts (PRODUCT §14): a request's system text against 100 adopted
templates, as the request path does it (`AdoptionIndex.match` on the snapshot's index).

Three cases: the exact text of a template without variables (a dict look-up), a text matching a
template with two variables (its prefix and suffix select the template, one anchored regex reads
the values), and a text matching nothing. Half of the templates begin with the same 40
characters, as prompts of one company do. Median of 7 rounds of 100,000 calls each.

Run: taskset -c 0 python benchmarks/bench_adoption.py
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from gateway.core.adoption import build_index, plan_adopt
from gateway.core.candidates import find_candidates
from gateway.core.capture import CallShape, sighting
from gateway.core.model import PromptState, RegistrySnapshot

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SHAPE = CallShape("gpt-4o-mini", None, None)
COMMON = "You are a helpful assistant of Acme Cloud. "


def template(i: int) -> str:
    head = COMMON if i % 2 else f"Assistant number {i} of Acme Cloud speaking. "
    return (
        head + f"You handle topic {i}: billing, refunds and plans. You are talking to {{name}}, "
        f"a customer on the {{plan}} plan. Answer briefly, cite article {i} of the docs, and "
        f"never reveal internal notes (policy {i})."
    )


def adopted(name: str, texts: list[str]) -> PromptState:
    (candidate,) = find_candidates([sighting("system", t, SHAPE, T0) for t in texts])
    change = plan_adopt(PromptState(name), candidate, {}, new_id=name, actor="bench", now=T0)
    return PromptState(
        name, versions=change.versions, active=change.active, adoption=change.adoption
    )


def main() -> None:
    states = {}
    for i in range(100):
        if i % 10 == 0:  # every tenth a fixed text: no variables
            states[f"p{i}"] = adopted(f"p{i}", [template(i).format(name="Ada", plan="Pro")])
        else:
            people = [("Ada Lovelace", "Pro"), ("Bob", "Free")]
            texts = [template(i).format(name=n, plan=p) for n, p in people]
            states[f"p{i}"] = adopted(f"p{i}", texts)
    index = build_index(RegistrySnapshot(states))
    cases = {
        "exact known text (no variables)": template(50).format(name="Ada", plan="Pro"),
        "template match (2 variables)": template(77).format(name="Grace Hopper", plan="Team"),
        "miss (no template matches)": template(77)
        .format(name="Grace", plan="Team")
        .replace("briefly", "at length"),
    }
    assert index.size == 100
    assert index.match(cases["exact known text (no variables)"]) is not None
    found = index.match(cases["template match (2 variables)"])
    assert found is not None and found.values == {"var1": "Grace Hopper", "var2": "Team"}
    assert index.match(cases["miss (no template matches)"]) is None
    n = 100_000
    print(f"100 adopted templates, median of 7 rounds of {n:,} calls, microseconds per call")
    for label, text in cases.items():
        rounds = []
        match = index.match
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(n):
                match(text)
            rounds.append((time.perf_counter() - start) / n * 1e6)
        print(f"{label:<36} {statistics.median(rounds):6.2f} µs  ({len(text)} characters)")


if __name__ == "__main__":
    main()
