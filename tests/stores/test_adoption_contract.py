"""The adoption part of the store contract (PRODUCT §14), run on SQLite and a real Redis server:
captured prompts merge and stay bounded; an adoption binding is written with its version and
read back by every reader of the registry."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.core.adoption import plan_adopt
from gateway.core.candidates import find_candidates
from gateway.core.capture import CallShape, merge, sighting
from gateway.core.registry import plan_promote
from gateway.errors import VersionConflict
from gateway.stores.backup import RegistryExport
from gateway.stores.base import Store
from tests.factories import T0
from tests.stores.conftest import Backend

SHAPE = CallShape("gpt-4o-mini", 0.2, None)
TEXT = "You are the assistant of Acme. The customer is {name}, on the {plan} plan. Be brief."


def seen(name: str, plan: str = "Pro", minutes: int = 0, count: int = 1):  # type: ignore[no-untyped-def]
    return sighting(
        "system", TEXT.format(name=name, plan=plan), SHAPE, T0 + timedelta(minutes=minutes), count
    )


async def test_nothing_captured_is_an_empty_list(store: Store) -> None:
    """A store that never captured anything lists nothing."""
    assert await store.captured() == []


async def test_batches_merge_by_fingerprint(store: Store) -> None:
    """The same text in two batches is one captured prompt: counts add, times widen, the first
    sample and the shapes' counts are kept."""
    await store.record_captures([seen("Ada", minutes=5, count=2)], limit=10)
    later = sighting(
        "system",
        TEXT.format(name="Ada", plan="Pro"),
        CallShape("gpt-4o", None, 9),
        T0 + timedelta(minutes=9),
    )
    await store.record_captures([later, seen("Bob", minutes=1)], limit=10)
    found = {p.sample: p for p in await store.captured()}
    ada = found[TEXT.format(name="Ada", plan="Pro")]
    assert ada == merge(seen("Ada", minutes=5, count=2), later)
    assert ada.count == 3
    assert (ada.first_seen, ada.last_seen) == (T0 + timedelta(minutes=5), T0 + timedelta(minutes=9))
    assert ada.shapes == {SHAPE: 2, CallShape("gpt-4o", None, 9): 1}
    assert ada.models == {"gpt-4o-mini": 2, "gpt-4o": 1}
    assert next(p.sample for p in await store.captured()) == ada.sample  # newest first


async def test_the_least_recently_seen_are_dropped(store: Store) -> None:
    """Beyond `limit`, the least recently seen captured prompts are deleted."""
    await store.record_captures([seen(f"user{i}", minutes=i) for i in range(6)], limit=4)
    kept = await store.captured()
    assert [p.last_seen for p in kept] == [T0 + timedelta(minutes=i) for i in (5, 4, 3, 2)]
    await store.record_captures([seen("user0", minutes=10)], limit=4)
    names = [p.sample.split("customer is ")[1].split(",")[0] for p in await store.captured()]
    assert names == ["user0", "user5", "user4", "user3"]


async def test_adoption_is_written_with_its_version(store: Store) -> None:
    """Adopting writes version 1.0.0, active, and its binding: snapshot() and prompt() read it,
    a later promotion keeps it, and adopting onto an existing name writes nothing."""
    candidate = find_candidates([seen("Ada"), seen("Bob", "Free")])[0]
    await store.apply(
        "acme-support",
        lambda state, _: plan_adopt(
            state, candidate, {"var1": "customer_name"}, new_id="v1", actor="alice", now=T0
        ),
    )
    state = (await store.snapshot()).prompts["acme-support"]
    assert state.active == "1.0.0"
    assert state.adoption is not None
    assert (state.adoption.version, state.adoption.candidate, state.adoption.by) == (
        "1.0.0",
        candidate.id,
        "alice",
    )
    assert state.adoption.at == T0
    assert state.by_version["1.0.0"].variables == ("customer_name", "var2")
    assert (await store.prompt("acme-support")).adoption == state.adoption
    audit = [e.action for e in await store.audit(prompt_name="acme-support")]
    assert audit == ["version.create", "prompt.adopt"]

    await store.apply(
        "acme-support",
        lambda s, _: plan_promote(s, "1.0.0", threshold=0.9, force=True, actor="a", now=T0),
    )
    with pytest.raises(VersionConflict, match="already exists"):
        await store.apply(
            "acme-support",
            lambda s, _: plan_adopt(s, candidate, {}, new_id="v2", actor="a", now=T0),
        )
    again = (await store.snapshot()).prompts["acme-support"]
    assert again.adoption == state.adoption
    assert len(again.versions) == 1


async def test_export_and_restore_keep_the_binding(store: Store, backend: Backend) -> None:
    """An exported registry restored into an empty store keeps each prompt's adoption."""
    candidate = find_candidates([seen("Ada"), seen("Bob", "Free")])[0]
    await store.apply(
        "acme-support",
        lambda state, _: plan_adopt(state, candidate, {}, new_id="v1", actor="a", now=T0),
    )
    exported = await store.export()
    assert exported.snapshot.prompts["acme-support"].adoption is not None
    other = Backend(
        backend.kind,
        backend.location + "-2" if backend.kind == "sqlite" else backend.location,
        prefix=backend.prefix + "copy:",
    )
    target = other.open()
    try:
        await target.restore(RegistryExport(exported.snapshot, exported.audit))
        restored = (await target.snapshot()).prompts["acme-support"]
        assert restored.adoption == exported.snapshot.prompts["acme-support"].adoption
    finally:
        await target.close()
