"""`gateway adoption candidates` and `adopt`, on the store and through a served gateway's /admin:
the same output, and bad input refused with exit 1, a one-line reason and nothing written."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.core.capture import CallShape, sighting
from gateway.stores.sqlite import SQLiteStore
from tests.conftest import Gateway
from tests.factories import T0

TEXT = "You are the billing assistant of Acme. The customer is {name}, on the {plan} plan."


def capture(project: Path) -> None:
    """What a gateway with capture on would have stored after three users' calls."""
    shape = CallShape("gpt-4o-mini", 0.2, None)
    batch = [
        sighting("system", TEXT.format(name=n, plan=p), shape, T0, 2)
        for n, p in (("Ada", "Pro"), ("Bob", "Free"), ("Cy", "Team"))
    ]
    asyncio.run(SQLiteStore(project / "gateway.db").record_captures(batch, limit=1000))


def test_candidates_then_adopt(gateway: Gateway, project: Path) -> None:
    """The candidate lists its template and counts; adopting it creates an active 1.0.0 with
    the renamed variable, audited."""
    capture(project)
    (candidate,) = gateway("adoption", "candidates", "--json")
    assert candidate["template"] == TEXT.format(name="{{var1}}", plan="{{var2}}")
    assert (candidate["count"], candidate["texts"]) == (6, 3)
    table = gateway("adoption", "candidates").stdout
    assert candidate["id"] in table and "var1, var2" in table
    result = gateway(
        "adoption",
        "adopt",
        candidate["id"],
        "--name",
        "billing",
        "--var",
        "var1=customer",
        "--json",
    )
    assert result["version"]["variables"] == ["customer", "var2"]
    assert result["version"]["is_active"] is True
    audit = gateway("audit", "--prompt", "billing", "--json")
    assert [e["action"] for e in audit] == ["version.create", "prompt.adopt"]


def test_bad_input_writes_nothing(gateway: Gateway, project: Path) -> None:
    """An unknown candidate, a name that exists, a --var the template lacks: exit 1 with the
    reason, and the registry unchanged."""
    capture(project)
    gateway("prompts", "push")
    (candidate,) = gateway("adoption", "candidates", "--json")
    before = gateway("audit", "--json")
    unknown = gateway("adoption", "adopt", "c0000000000", "--name", "x", ok=False)
    assert "No adoption candidate 'c0000000000'" in unknown.output
    taken = gateway("adoption", "adopt", candidate["id"], "--name", "support-agent", ok=False)
    assert "already exists" in taken.output
    lacking = gateway(
        "adoption", "adopt", candidate["id"], "--name", "fresh", "--var", "var7=x", ok=False
    )
    assert "has no variable var7" in lacking.output
    assert gateway("audit", "--json") == before
    assert all(p["name"] != "fresh" for p in gateway("prompts", "list", "--json"))
