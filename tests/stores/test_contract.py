"""The store contract: one suite, run unchanged on SQLite and on a real Redis server."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.core.model import TestResults as Results  # not a pytest class
from gateway.core.promptfile import parse_prompt_file
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.errors import (
    ExperimentConflict,
    NothingToRollBack,
    PromotionRefused,
    StoreUnavailable,
    VersionConflict,
    VersionNotFound,
)
from gateway.files import ExperimentSpec
from gateway.prompts import PromptRegistry
from gateway.stores import codec
from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore
from tests.factories import T0
from tests.factories import version as factory_version


@dataclass(frozen=True)
class Backend:
    """How to open one store, picklable so other processes can open the same one."""

    kind: str
    location: str
    prefix: str = ""

    def open(self) -> Store:
        if self.kind == "sqlite":
            return SQLiteStore(self.location, poll_interval=0.05)
        return RedisStore(self.location, prefix=self.prefix, poll_interval=0.1)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "gateway.db"))
    redis_url: str = request.getfixturevalue("redis_url")
    return Backend("redis", redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}:")


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = backend.open()
    yield opened
    await opened.close()


@pytest.fixture
def registry(store: Store) -> PromptRegistry:
    return PromptRegistry(store, threshold=0.9, clock=lambda: T0)


def draft(ver: str = "1.0.0", content: str = "You help {{company}}.", name: str = "support-agent"):  # type: ignore[no-untyped-def]
    return make_draft(
        name=name,
        version=ver,
        messages=[Message("system", content)],
        model="gpt-4o-mini",
        temperature=0.2,
        max_tokens=256,
        tags=["support"],
    )


PASSING = Results(total=4, passed=4, failed=0, pass_rate=1.0)


async def test_empty_store_gives_an_empty_snapshot(store: Store) -> None:
    """An empty registry is a valid snapshot with no prompts."""
    snap = await store.snapshot()
    assert dict(snap.prompts) == {}


async def test_created_version_round_trips(registry: PromptRegistry, store: Store) -> None:
    """A created version comes back with every field, numbered 1, in snapshot and prompt()."""
    assert await registry.create_version(draft(), actor="alice") is True
    snap = await store.snapshot()
    stored = snap.prompts["support-agent"].by_version["1.0.0"]
    assert stored.content() == draft()
    assert (stored.number, stored.created_by, stored.created_at) == (1, "alice", T0)
    assert (stored.is_active, stored.is_tested, stored.test_results) == (False, False, None)
    assert (await store.prompt("support-agent")).versions == (stored,)


async def test_client_system_round_trips(registry: PromptRegistry, store: Store) -> None:
    """A version's client_system comes back as stored, in snapshot() and in prompt()."""
    keep = replace(draft(), client_system="keep")
    await registry.create_version(keep, actor="a")
    await registry.create_version(draft("1.1.0"), actor="a")
    state = (await store.snapshot()).prompts["support-agent"]
    assert [v.client_system for v in state.versions] == ["keep", "replace"]
    assert state.by_version["1.0.0"].content() == keep
    assert (await store.prompt("support-agent")).by_version["1.0.0"].client_system == "keep"


async def test_adding_client_system_to_a_released_version_is_a_change(
    registry: PromptRegistry, store: Store
) -> None:
    """A prompt file that adds client_system: keep to a released version is refused on push."""
    doc = {"name": "support-agent", "version": "1.0.0", "content": "You help {{company}}."}
    await registry.push([parse_prompt_file(doc, "a.yaml")], actor="a")
    again = await registry.push([parse_prompt_file(doc, "a.yaml")], actor="a")
    assert [r.status for r in again] == ["unchanged"]
    keep = parse_prompt_file({**doc, "client_system": "keep"}, "a.yaml")
    with pytest.raises(
        VersionConflict, match=r"a\.yaml: support-agent@1\.0\.0 is already released"
    ):
        await registry.push([keep], actor="a")
    assert (await store.prompt("support-agent")).versions[0].client_system == "replace"


def test_versions_stored_before_client_system_read_as_replace() -> None:
    """A stored version without the client_system field (an older row) loads as `replace`."""
    version = replace(factory_version(), client_system="keep")
    doc = orjson.loads(codec.dump_version(version))
    assert doc["client_system"] == "keep"
    del doc["client_system"]
    assert codec.load_version(orjson.dumps(doc), active=None).client_system == "replace"


async def test_unknown_prompt_has_an_empty_state(store: Store) -> None:
    """prompt() of a name never created has no versions."""
    assert (await store.prompt("nothing-here")).versions == ()


async def test_same_content_is_idempotent(registry: PromptRegistry, store: Store) -> None:
    """Pushing the same version twice creates it once and audits once."""
    assert await registry.create_version(draft(), actor="a") is True
    assert await registry.create_version(draft(), actor="a") is False
    assert [e.action for e in await store.audit()] == ["version.create"]


async def test_other_content_never_overwrites(registry: PromptRegistry, store: Store) -> None:
    """A version that exists is never overwritten, and the refusal writes nothing."""
    await registry.create_version(draft(), actor="a")
    with pytest.raises(VersionConflict):
        await registry.create_version(draft(content="Other {{company}}"), actor="a")
    stored = (await store.prompt("support-agent")).by_version["1.0.0"]
    assert stored.messages == (Message("system", "You help {{company}}."),)
    assert len(await store.audit()) == 1


async def test_promote_and_rollback(registry: PromptRegistry, store: Store) -> None:
    """Promotion is gated and audited; rollback re-activates the previous version."""
    for ver in ("1.0.0", "1.1.0"):
        await registry.create_version(draft(ver), actor="a")
    with pytest.raises(PromotionRefused):
        await registry.promote("support-agent", "1.0.0", actor="a")
    await registry.record_test_run("support-agent", "1.0.0", PASSING, actor="ci")
    await registry.promote("support-agent", "1.0.0", actor="a")
    await registry.promote("support-agent", "1.1.0", actor="a", force=True)
    state = await store.prompt("support-agent")
    assert (state.active, [v.version for v in state.versions if v.is_active]) == (
        "1.1.0",
        ["1.1.0"],
    )
    entry = await registry.rollback("support-agent", actor="b")
    assert (entry.before, entry.after) == ({"active": "1.1.0"}, {"active": "1.0.0"})
    state = (await store.snapshot()).prompts["support-agent"]
    assert state.active_version is not None and state.active_version.version == "1.0.0"
    with pytest.raises(NothingToRollBack):
        await registry.rollback("support-agent", actor="b")
    actions = [
        (e.action, e.version, e.forced) for e in await store.audit(prompt_name="support-agent")
    ]
    assert actions == [
        ("version.create", "1.0.0", False),
        ("version.create", "1.1.0", False),
        ("version.test", "1.0.0", False),
        ("version.promote", "1.0.0", False),
        ("version.promote", "1.1.0", True),
        ("version.rollback", "1.0.0", False),
    ]


async def test_test_results_are_stored(registry: PromptRegistry, store: Store) -> None:
    """A test run's results and the is_tested flag persist on the version."""
    await registry.create_version(draft(), actor="a")
    await registry.record_test_run("support-agent", "1.0.0", PASSING, actor="ci")
    stored = (await store.prompt("support-agent")).by_version["1.0.0"]
    assert (stored.is_tested, stored.test_results) == (True, PASSING)


async def test_missing_version_is_refused_without_writing(
    registry: PromptRegistry, store: Store
) -> None:
    """Promoting a version that does not exist raises and writes nothing."""
    await registry.create_version(draft(), actor="a")
    with pytest.raises(VersionNotFound):
        await registry.promote("support-agent", "2.0.0", actor="a", force=True)
    assert len(await store.audit()) == 1


async def test_experiments_lifecycle(registry: PromptRegistry, store: Store) -> None:
    """Experiments are created, found, listed in the snapshot, exclusive per prompt, and stopped."""
    for ver in ("1.0.0", "1.1.0"):
        await registry.create_version(draft(ver), actor="a")
    spec = ExperimentSpec("exp-1", "support-agent", "1.0.0", "1.1.0", 0.3)
    created = await registry.create_experiment(spec, actor="a")
    assert await store.find_experiment("exp-1") == created
    assert (await store.snapshot()).experiment("exp-1") == created
    with pytest.raises(ExperimentConflict):
        await registry.create_experiment(
            ExperimentSpec("exp-2", "support-agent", "1.1.0", "1.0.0", 0.5), actor="a"
        )
    stopped = await registry.stop_experiment("exp-1", actor="b")
    assert (stopped.status, stopped.stopped_at) == ("stopped", T0)
    assert await store.find_experiment("missing") is None
    actions = [e.action for e in await store.audit()]
    assert actions[-2:] == ["experiment.create", "experiment.stop"]


async def test_audit_limit_and_filter(registry: PromptRegistry, store: Store) -> None:
    """audit() returns the newest entries, oldest first, optionally for one prompt."""
    for i in range(5):
        await registry.create_version(draft(f"1.0.{i}"), actor="a")
    await registry.create_version(draft(name="other"), actor="a")
    assert [e.version for e in await store.audit(limit=2)] == ["1.0.4", "1.0.0"]
    mine = await store.audit(prompt_name="support-agent", limit=3)
    assert [e.version for e in mine] == ["1.0.2", "1.0.3", "1.0.4"]


async def test_concurrent_promotions_in_one_process(backend: Backend) -> None:
    """Many writers promoting at once on separate connections leave a consistent history."""
    setup = backend.open()
    registry = PromptRegistry(setup, threshold=0.9, clock=lambda: T0)
    versions = [f"1.0.{i}" for i in range(8)]
    for ver in versions:
        await registry.create_version(draft(ver), actor="a")
    writers = [backend.open() for _ in versions]
    await asyncio.gather(
        *(
            PromptRegistry(s, threshold=0.9).promote("support-agent", v, actor="w", force=True)
            for s, v in zip(writers, versions, strict=True)
        )
    )
    state = await setup.prompt("support-agent")
    promotions = [e for e in await setup.audit() if e.action == "version.promote"]
    assert len(promotions) == 8
    # Each promotion saw the one before it: the audit forms one unbroken chain.
    chain = [e.before["active"] if e.before else None for e in promotions]
    assert chain == [None] + [e.version for e in promotions[:-1]]
    assert state.active == promotions[-1].version
    assert list(state.history) == [e.version for e in promotions[:-1]]
    for s in [setup, *writers]:
        await s.close()


def _promote_in_process(backend: Backend, version: str, barrier: Any) -> None:
    async def run() -> None:
        store = backend.open()
        barrier.wait()
        await PromptRegistry(store, threshold=0.9).promote(
            "support-agent", version, actor=f"proc-{version}", force=True
        )
        await store.close()

    asyncio.run(run())


async def test_two_processes_promoting_at_once(backend: Backend) -> None:
    """Two processes promoting different versions at the same moment: one active, two audits."""
    setup = backend.open()
    registry = PromptRegistry(setup, threshold=0.9)
    for ver in ("1.0.0", "1.1.0", "1.2.0"):
        await registry.create_version(draft(ver), actor="a")
    await registry.promote("support-agent", "1.0.0", actor="a", force=True)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_promote_in_process, args=(backend, v, barrier))
        for v in ("1.1.0", "1.2.0")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    state = await setup.prompt("support-agent")
    assert [v.version for v in state.versions if v.is_active] == [state.active]
    promotions = [e for e in await setup.audit() if e.action == "version.promote"][1:]
    assert sorted(e.version for e in promotions if e.version) == ["1.1.0", "1.2.0"]
    first, second = promotions
    assert (first.before, second.before) == ({"active": "1.0.0"}, {"active": first.version})
    assert state.active == second.version
    await setup.close()


async def test_changes_yield_at_once_and_on_every_write(
    backend: Backend, registry: PromptRegistry
) -> None:
    """The change feed yields on subscription and again after a write by another connection."""
    watcher = backend.open()
    feed = watcher.changes().__aiter__()
    await asyncio.wait_for(feed.__anext__(), 5)
    await registry.create_version(draft(), actor="a")
    await asyncio.wait_for(feed.__anext__(), 2)
    await feed.aclose()  # type: ignore[attr-defined]
    await watcher.close()


async def test_unreachable_store_says_so(tmp_path: Path) -> None:
    """A store that cannot be reached raises StoreUnavailable naming where it looked."""
    redis = RedisStore("redis://:secret@127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable, match=r"redis://:\*\*\*@127.0.0.1:1/0") as caught:
        await redis.ping()
    assert "secret" not in caught.value.message
    await redis.close()
    sqlite = SQLiteStore(tmp_path / "missing-dir" / "gateway.db")
    with pytest.raises(StoreUnavailable, match="missing-dir"):
        await sqlite.ping()
