"""The store contract: one suite, run unchanged on SQLite and on a real Redis server."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import random
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.core import stats
from gateway.core.model import TestResults as Results  # not a pytest class
from gateway.core.outcomes import NO_UNITS, ArmTotals, Exposure, Feedback, Variant
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
from gateway.stores.base import Recorded, Store
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SCHEMA, SQLiteStore
from tests.factories import T0
from tests.factories import experiment as factory_experiment
from tests.factories import version as factory_version
from tests.outcome_rows import record_outcomes
from tests.stores.conftest import Backend


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


async def test_last_changes_gives_each_prompts_newest_entry(
    registry: PromptRegistry, store: Store
) -> None:
    """last_changes() maps every prompt with audit entries to its newest one; none when empty."""
    assert await store.last_changes() == {}
    for i in range(3):
        await registry.create_version(draft(f"1.0.{i}"), actor="a")
    await registry.create_version(draft(name="other"), actor="b")
    await registry.promote("support-agent", "1.0.1", actor="c", force=True)
    last = await store.last_changes()
    assert sorted(last) == ["other", "support-agent"]
    assert (last["support-agent"].actor, last["support-agent"].version) == ("c", "1.0.1")
    assert last["other"] == (await store.audit(prompt_name="other", limit=1))[-1]


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


METRICS = ("latency", "cost_per_task", "user_satisfaction", "task_completion")


def exposure(
    request_id: str,
    unit: str = "u1",
    *,
    variant: Variant = "control",
    experiment: str = "exp-1",
    latency: float = 100.0,
    cost: float | None = 0.25,
) -> Exposure:
    """One call served in an experiment; the defaults are a control call of user u1."""
    return Exposure(
        request_id=request_id,
        experiment_id=experiment,
        variant=variant,
        version="1.0.0" if variant == "control" else "1.1.0",
        unit=unit,
        at=T0,
        latency_ms=latency,
        input_tokens=12,
        output_tokens=34,
        cost_usd=cost,
        status=200,
    )


async def outcomes(
    store: Store, metric: str, experiment: str = "exp-1"
) -> dict[tuple[str, str], tuple[int, float, int]]:
    """unit_outcomes as {(variant, unit): (requests, total, count)}, each unit listed once."""
    units = await store.unit_outcomes(experiment, metric)
    table = {(o.variant, o.unit): (o.requests, o.total, o.count) for o in units}
    assert len(table) == len(units)
    return table


async def test_exposure_round_trips(store: Store) -> None:
    """A stored exposure comes back with every field, its time in UTC; an unknown id gives None."""
    plus_two = timezone(timedelta(hours=2))
    bare = exposure("r1")._replace(
        at=datetime(2026, 11, 1, 13, 30, 15, 123456, tzinfo=plus_two),
        latency_ms=1234.5678,
        input_tokens=None,
        output_tokens=None,
        cost_usd=None,
        status=499,
    )
    full = exposure("r2", "7f3a" * 16, variant="treatment")._replace(
        cost_usd=0.000123, trace_id="4bf92f3577b34da6a3ce929d0e0e4736"
    )
    # Every double back as it was sent, text as it was (quotes, a slash, beyond ASCII).
    exact = exposure("r3", 'unit "ü"/\\x', variant="treatment")._replace(
        at=datetime(2026, 11, 1, 11, 30, 15),  # naive: taken as UTC
        latency_ms=0.1 + 0.2,
        cost_usd=1 / 3 * 1e-9,
        input_tokens=2**53 - 1,  # counts stay integers: 10**17 once read back as 1e+17
        output_tokens=10**17,
        status=2**40,
    )
    await record_outcomes(store, [bare, full, exact], [])
    stored = await store.exposure("r1")
    assert stored == bare
    assert stored is not None
    assert stored.at.utcoffset() == timedelta(0)
    assert stored.at == datetime(2026, 11, 1, 11, 30, 15, 123456, tzinfo=UTC)
    assert await store.exposure("r2") == full
    latest = await store.exposure("r3")
    assert latest == exact._replace(at=exact.at.replace(tzinfo=UTC))
    assert latest is not None and type(latest.latency_ms) is type(latest.cost_usd) is float
    assert type(latest.input_tokens) is type(latest.output_tokens) is type(latest.status) is int
    stored_full = await store.exposure("r2")
    assert stored_full is not None and type(stored_full.latency_ms) is float  # 100.0, not 100
    assert await store.exposure("missing") is None


async def test_an_exposure_stored_without_a_trace_id_still_loads(tmp_path: Path) -> None:
    """A SQLite file made before exposures kept their trace id gains the column when opened, and
    its rows load with no trace id; a Redis document of 10 fields loads the same way."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA.replace(",\n    trace_id TEXT\n);", "\n);", 1))
        conn.execute(
            "INSERT INTO exposures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("old", "exp-1", "control", "1.0.0", "u1", T0.isoformat(), 5.0, 1, 2, None, 200),
        )
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(exposures)")}
    assert "trace_id" not in columns
    store = SQLiteStore(path)
    loaded = await store.exposure("old")
    assert loaded is not None and loaded.trace_id is None and loaded.latency_ms == 5.0
    await record_outcomes(store, [exposure("new")._replace(trace_id="ab" * 16)], [])
    again = await store.exposure("new")
    assert again is not None and again.trace_id == "ab" * 16
    ten = orjson.dumps(["exp-1", "control", "1.0.0", "u1", T0.isoformat(), 5.0, 1, 2, None, 200])
    assert codec.load_exposure("old", ten).trace_id is None


async def test_exposure_counts_once_across_batches(store: Store) -> None:
    """A request id already stored is ignored by a later batch, which keeps the first exposure."""
    first = await record_outcomes(store, [exposure("r1"), exposure("r2")], [])
    again = await record_outcomes(store, [exposure("r1", latency=999.0), exposure("r3")], [])
    assert (first, again) == (Recorded(2, 0, 0), Recorded(1, 0, 0))
    assert await outcomes(store, "latency") == {("control", "u1"): (3, 300.0, 3)}
    stored = await store.exposure("r1")
    assert stored is not None and stored.latency_ms == 100.0
    hour = codec.utc_iso(T0)[:13]
    assert await periods(store, "latency") == {(hour, "control"): (3, 3, 300.0, 30_000.0)}
    assert await periods(store, "cost_per_task") == {(hour, "control"): (3, 3, 0.75, 0.1875)}


async def test_exposure_counts_once_within_a_batch(store: Store) -> None:
    """A request id twice in one batch is recorded once, as it first appears."""
    recorded = await record_outcomes(
        store, [exposure("r1"), exposure("r1", "u2", latency=500.0)], []
    )
    assert recorded == Recorded(1, 0, 0)
    assert await outcomes(store, "latency") == {("control", "u1"): (1, 100.0, 1)}
    hour = codec.utc_iso(T0)[:13]
    assert await periods(store, "latency") == {(hour, "control"): (1, 1, 100.0, 10_000.0)}


async def test_retried_batch_changes_nothing(store: Store) -> None:
    """The same batch written twice (a retry) leaves every aggregate as after the first."""
    batch = [exposure("r1"), exposure("r2", cost=None)]
    votes = [Feedback("r1", "user_satisfaction", 4.0), Feedback("r2", "task_completion", 1.0)]
    assert await record_outcomes(store, batch, votes) == Recorded(2, 2, 0)
    before = [await outcomes(store, m) for m in METRICS]
    assert await record_outcomes(store, batch, votes) == Recorded(0, 2, 0)
    assert [await outcomes(store, m) for m in METRICS] == before


async def test_feedback_in_the_batch_of_its_exposure(store: Store) -> None:
    """A batch holding a call's exposure and its feedback applies both: exposures go first."""
    recorded = await record_outcomes(
        store, [exposure("r1")], [Feedback("r1", "task_completion", 1.0)]
    )
    assert recorded == Recorded(1, 1, 0)
    assert await outcomes(store, "task_completion") == {("control", "u1"): (1, 1.0, 1)}


async def test_feedback_replaces_and_moves_the_sum(store: Store) -> None:
    """A second value of one (request, metric) replaces the first: sum moves, count stays."""
    await record_outcomes(
        store, [exposure("r1"), exposure("r2")], [Feedback("r1", "user_satisfaction", 4.0)]
    )
    replaced = await record_outcomes(
        store,
        [],
        [Feedback("r1", "user_satisfaction", 2.5), Feedback("r2", "user_satisfaction", 5.0)],
    )
    assert replaced == Recorded(0, 2, 0)
    assert await outcomes(store, "user_satisfaction") == {("control", "u1"): (2, 7.5, 2)}
    twice = await record_outcomes(
        store,
        [],
        [Feedback("r2", "user_satisfaction", 1.0), Feedback("r2", "user_satisfaction", 3.0)],
    )
    assert twice == Recorded(0, 2, 0)
    assert await outcomes(store, "user_satisfaction") == {("control", "u1"): (2, 5.5, 2)}


async def test_the_value_taken_last_stays_whichever_batch_comes_last(store: Store) -> None:
    """Two gateways took two values for one call; the one taken later reached the store first
    (each gateway writes its own queue on its own timer): it stays, and the sums and periods
    count it once. A value taken later still replaces it."""
    await record_outcomes(store, [exposure("r1"), exposure("r2", "u2")], [])
    first = await record_outcomes(store, [], [Feedback("r1", "task_completion", 1.0, at=2_000)])
    stale = await record_outcomes(store, [], [Feedback("r1", "task_completion", 0.0, at=1_000)])
    assert (first, stale) == (Recorded(0, 1, 0), Recorded(0, 0, 0))
    assert await outcomes(store, "task_completion") == {
        ("control", "u1"): (1, 1.0, 1),
        ("control", "u2"): (1, 0.0, 0),
    }
    (period,) = await store.period_totals("exp-1", "task_completion")
    assert (period.count, period.total, period.squares) == (1, 1.0, 1.0)
    later = await record_outcomes(
        store,
        [],
        [Feedback("r1", "task_completion", 0.0, at=3_000), Feedback("r2", "task_completion", 1.0)],
    )
    assert later == Recorded(0, 2, 0)
    assert await outcomes(store, "task_completion") == {
        ("control", "u1"): (1, 0.0, 1),
        ("control", "u2"): (1, 1.0, 1),
    }
    (period,) = await store.period_totals("exp-1", "task_completion")
    assert (period.count, period.total, period.squares) == (2, 1.0, 1.0)


async def test_orphan_feedback_is_counted_and_ignored(store: Store) -> None:
    """Feedback for a request id with no exposure is an orphan and leaves no trace."""
    recorded = await record_outcomes(
        store,
        [exposure("r1")],
        [Feedback("ghost", "task_completion", 1.0), Feedback("r1", "task_completion", 0.0)],
    )
    assert recorded == Recorded(1, 1, 1)
    # The exposure arriving later does not revive the orphan's value.
    await record_outcomes(store, [exposure("ghost", "u2")], [])
    assert await outcomes(store, "task_completion") == {
        ("control", "u1"): (1, 0.0, 1),
        ("control", "u2"): (1, 0.0, 0),
    }


async def test_latency_and_cost_aggregates(store: Store) -> None:
    """latency counts every exposure; cost_per_task only those with a cost; all units listed."""
    await record_outcomes(
        store,
        [
            exposure("r1", "u1", latency=100.0, cost=0.25),
            exposure("r2", "u1", latency=300.0, cost=None),
            exposure("r3", "u2", variant="treatment", latency=50.0, cost=0.5),
            exposure("r4", "u2", variant="treatment", latency=70.5, cost=0.125),
            exposure("r5", "u3", variant="treatment", latency=20.0, cost=None),
        ],
        [],
    )
    assert await outcomes(store, "latency") == {
        ("control", "u1"): (2, 400.0, 2),
        ("treatment", "u2"): (2, 120.5, 2),
        ("treatment", "u3"): (1, 20.0, 1),
    }
    assert await outcomes(store, "cost_per_task") == {
        ("control", "u1"): (2, 0.25, 1),
        ("treatment", "u2"): (2, 0.625, 2),
        ("treatment", "u3"): (1, 0.0, 0),
    }


async def test_sums_keep_every_bit(store: Store) -> None:
    """Sums read back as the doubles that adding the values in order gives, no rounding."""
    values = [0.1, 0.2, 1e-7, 123456.789]
    await record_outcomes(
        store, [exposure(f"r{i}", latency=v, cost=v / 1000) for i, v in enumerate(values)], []
    )
    [(_, latency, _)] = (await outcomes(store, "latency")).values()
    [(_, cost, _)] = (await outcomes(store, "cost_per_task")).values()
    expected_latency = expected_cost = 0.0
    for v in values:
        expected_latency += v
        expected_cost += v / 1000
    assert (latency, cost) == (expected_latency, expected_cost)


async def test_feedback_metrics_are_kept_apart(store: Store) -> None:
    """Each feedback metric has its own sum; units without a value are listed with count 0."""
    await record_outcomes(
        store,
        [
            exposure("r1", "u1"),
            exposure("r2", "u1"),
            exposure("r3", "u2", variant="treatment"),
            exposure("r4", "u3", variant="treatment"),
        ],
        [
            Feedback("r1", "user_satisfaction", 4.5),
            Feedback("r2", "user_satisfaction", 3.0),
            Feedback("r2", "task_completion", 1.0),
            Feedback("r3", "task_completion", 0.0),
        ],
    )
    assert await outcomes(store, "user_satisfaction") == {
        ("control", "u1"): (2, 7.5, 2),
        ("treatment", "u2"): (1, 0.0, 0),
        ("treatment", "u3"): (1, 0.0, 0),
    }
    assert await outcomes(store, "task_completion") == {
        ("control", "u1"): (2, 1.0, 1),
        ("treatment", "u2"): (1, 0.0, 1),
        ("treatment", "u3"): (1, 0.0, 0),
    }


async def test_units_belong_to_their_experiment_and_arm(store: Store) -> None:
    """A unit is aggregated per (experiment, variant); another experiment's units never show."""
    await record_outcomes(
        store,
        [
            exposure("r1", "u1", latency=10.0),
            exposure("r2", "u1", variant="treatment", latency=20.0),
            exposure("r3", "u1", experiment="exp-2", latency=40.0),
        ],
        [Feedback("r3", "task_completion", 1.0)],
    )
    assert await outcomes(store, "latency") == {
        ("control", "u1"): (1, 10.0, 1),
        ("treatment", "u1"): (1, 20.0, 1),
    }
    assert await outcomes(store, "task_completion", "exp-2") == {("control", "u1"): (1, 1.0, 1)}
    assert await store.unit_outcomes("never-ran", "latency") == []


async def test_units_come_back_as_recorded_whatever_they_hold(store: Store) -> None:
    """A unit holding spaces, colons, bars, a newline or non-ASCII is listed exactly as recorded."""
    odd = "req 1:2|3\nÄ"
    await record_outcomes(
        store, [exposure(odd, odd, variant="treatment")], [Feedback(odd, "user_satisfaction", 3.0)]
    )
    assert await outcomes(store, "user_satisfaction") == {("treatment", odd): (1, 3.0, 1)}
    stored = await store.exposure(odd)
    assert stored is not None and stored.unit == odd


async def test_unknown_metric_is_refused(store: Store) -> None:
    """unit_outcomes of a metric that experiments do not measure raises ValueError."""
    with pytest.raises(ValueError, match="'accuracy'"):
        await store.unit_outcomes("exp-1", "accuracy")


def close_to(found: Any, expected: Any, rel: float = 1e-9) -> bool:
    """JSON-like values or dataclasses equal, floats to `rel` relative (None, ints and strings
    exactly)."""
    if dataclasses.is_dataclass(expected):
        return type(found) is type(expected) and close_to(
            dataclasses.asdict(found), dataclasses.asdict(expected), rel
        )
    if isinstance(expected, dict):
        return found.keys() == expected.keys() and all(
            close_to(found[k], v, rel) for k, v in expected.items()
        )
    if isinstance(expected, list | tuple):
        return len(found) == len(expected) and all(
            close_to(f, e, rel) for f, e in zip(found, expected, strict=True)
        )
    if isinstance(expected, float) and isinstance(found, float):
        return found == pytest.approx(expected, rel=rel)
    return bool(found == expected and type(found) is type(expected))


async def test_arm_totals_equal_the_sums_of_the_units(store: Store) -> None:
    """What the store sums per arm equals `core.stats.arm_totals` of `unit_outcomes` to 1e-9,
    and so do the §11 results computed from either, for every metric: 400 users and calls
    without a user (assigned at random: each its own unit, its request id), 2,000 calls with
    latencies near 10 s (a large mean and a small spread, where a one-pass variance would lose
    digits), costs missing on some calls, feedback replaced on some, and another experiment's
    calls that must not count."""
    rng = random.Random(12)
    calls, votes = [], []
    for i in range(2000):
        user = rng.randrange(400)
        variant: Variant = "treatment" if user % 3 == 0 else "control"
        unit = f"r{i}" if rng.random() < 0.3 else f"u{user}"
        cost = None if rng.random() < 0.1 else rng.uniform(0.0001, 0.002)
        calls.append(
            exposure(f"r{i}", unit, variant=variant, latency=10_000 + rng.gauss(0, 2), cost=cost)
        )
        if rng.random() < 0.4:
            votes.append(Feedback(f"r{i}", "user_satisfaction", float(rng.randint(0, 5))))
        if rng.random() < 0.3:
            votes.append(Feedback(f"r{i}", "task_completion", float(rng.random() < 0.6)))
    other = [exposure(f"o{i}", f"u{i}", experiment="exp-2", latency=1.0) for i in range(50)]
    for start in range(0, 2000, 250):  # batches: the random units' sums are merged batch by batch
        await record_outcomes(store, calls[start : start + 250] + (other if start else []), [])
    await record_outcomes(store, [], votes[: len(votes) // 2])
    await record_outcomes(store, [], votes[len(votes) // 2 :])
    replaced = [Feedback(v.request_id, v.metric, 5.0 - v.value) for v in votes[::7]]
    await record_outcomes(store, [], replaced)
    for metric in METRICS:
        units = await store.unit_outcomes("exp-1", metric)
        expected = stats.arm_totals(units)
        found = await store.arm_totals("exp-1", metric)
        assert close_to(found, expected), (metric, found, expected)
        assert found[0].users + found[1].users == len({c.unit for c in calls})
        spec = replace(factory_experiment(split=1 / 3), metric=metric)
        per_unit = stats.analyze(spec, units, alpha=0.05, min_units=100).to_json()
        summed = stats.analyze_totals(spec, *found, alpha=0.05, min_units=100).to_json()
        assert close_to(summed, per_unit), (metric, summed, per_unit)


async def test_arm_totals_of_arms_without_units_or_values(store: Store) -> None:
    """An experiment never exposed has NO_UNITS in both arms; an arm whose units have no value
    of the metric has its users and requests but no mean; an unknown metric is refused."""
    assert await store.arm_totals("never-ran", "latency") == (NO_UNITS, NO_UNITS)
    await record_outcomes(
        store,
        [exposure("r1"), exposure("r2", "u2"), exposure("r3", "u2")],
        [Feedback("r1", "user_satisfaction", 4.0)],
    )
    control, treatment = await store.arm_totals("exp-1", "user_satisfaction")
    assert (control, treatment) == (ArmTotals(2, 3, 1, 4.0, 0.0), NO_UNITS)
    control, _ = await store.arm_totals("exp-1", "task_completion")
    assert control == ArmTotals(2, 3, 0, None, None)


async def test_arm_totals_of_calls_assigned_at_random(store: Store) -> None:
    """Calls without a user are each a unit (unit = request id): counted as users and requests,
    their own values as the units' means, feedback on them included; an arm of such calls only,
    and one whose calls have no cost, add up too."""
    await record_outcomes(
        store,
        [
            exposure("r1", "r1", latency=10.0, cost=None),
            exposure("r2", "r2", latency=20.0, cost=None),
            exposure("r3", "r3", variant="treatment", latency=40.0),
        ],
        [Feedback("r1", "user_satisfaction", 4.0)],
    )
    await record_outcomes(store, [exposure("r4", "r4", latency=30.0, cost=None)], [])
    control, treatment = await store.arm_totals("exp-1", "latency")
    assert control == ArmTotals(3, 3, 3, 20.0, 200.0)
    assert treatment == ArmTotals(1, 1, 1, 40.0, 0.0)
    control, treatment = await store.arm_totals("exp-1", "cost_per_task")
    assert control == ArmTotals(3, 3, 0, None, None)
    assert treatment == ArmTotals(1, 1, 1, 0.25, 0.0)
    control, treatment = await store.arm_totals("exp-1", "user_satisfaction")
    assert control == ArmTotals(3, 3, 1, 4.0, 0.0)
    assert treatment == ArmTotals(1, 1, 0, None, None)
    assert await outcomes(store, "latency") == {
        ("control", "r1"): (1, 10.0, 1),
        ("control", "r2"): (1, 20.0, 1),
        ("control", "r4"): (1, 30.0, 1),
        ("treatment", "r3"): (1, 40.0, 1),
    }
    with pytest.raises(ValueError, match="'accuracy'"):
        await store.arm_totals("exp-1", "accuracy")


@pytest.mark.parametrize(
    "batch",
    [
        ([exposure("r1"), exposure("r2", latency=float("nan"))], []),
        ([exposure("r1"), exposure("r2", cost=float("inf"))], []),
        ([exposure("r1")], [Feedback("r1", "user_satisfaction", float("nan"))]),
        # Finite, but its square is not: Redis wrote the batch, then refused its period sums.
        ([exposure("r1"), exposure("r2", latency=1e155)], []),
        ([exposure("r1", latency=float("nan")), exposure("r2"), exposure("r3")], []),
        ([exposure("r1"), exposure("r2", cost=None), exposure("r3", cost=float("nan"))], []),
        ([exposure("r1"), exposure("r2", latency=-float("inf"))], []),
        ([exposure("r1"), exposure("r2", cost=-1e155), exposure("r3", cost=None)], []),
    ],
)
async def test_batch_with_a_non_finite_number_writes_nothing(
    store: Store, batch: tuple[list[Exposure], list[Feedback]]
) -> None:
    """A batch holding NaN, infinity or a number whose square is infinite is refused with
    ValueError before anything is written."""
    with pytest.raises(ValueError, match="finite"):
        await record_outcomes(store, *batch)
    assert await store.exposure("r1") is None
    assert await store.unit_outcomes("exp-1", "latency") == []
    assert await store.period_totals("exp-1", "latency") == []


async def test_concurrent_writers_give_exact_totals(backend: Backend) -> None:
    """Four stores writing the same calls at once, in other orders: each call counts once."""
    ids = range(200)

    def batches(offset: int) -> list[tuple[list[Exposure], list[Feedback]]]:
        order = [*ids[offset:], *ids[:offset]]
        return [
            (
                [exposure(f"r{i}", f"u{i % 20}", latency=float(i)) for i in chunk],
                [Feedback(f"r{i}", "task_completion", float(i % 2)) for i in chunk],
            )
            for chunk in (order[start : start + 25] for start in range(0, 200, 25))
        ]

    async def write(store: Store, offset: int) -> list[Recorded]:
        return [await record_outcomes(store, *batch) for batch in batches(offset)]

    writers = [backend.open() for _ in range(4)]
    results = await asyncio.gather(*(write(s, 50 * k) for k, s in enumerate(writers)))
    recorded = [r for per_writer in results for r in per_writer]
    assert sum(r.exposures for r in recorded) == 200
    assert (sum(r.feedback for r in recorded), sum(r.orphans for r in recorded)) == (800, 0)
    reader = writers[0]
    units = {f"u{k}": [i for i in ids if i % 20 == k] for k in range(20)}
    assert await outcomes(reader, "latency") == {
        ("control", u): (10, float(sum(rs)), 10) for u, rs in units.items()
    }
    assert await outcomes(reader, "task_completion") == {
        ("control", u): (10, float(sum(i % 2 for i in rs)), 10) for u, rs in units.items()
    }
    for s in writers:
        await s.close()


async def test_outcomes_of_an_unreachable_store_say_so(tmp_path: Path) -> None:
    """Recording and reading outcomes of a store that does not answer raise StoreUnavailable."""
    stores: list[Store] = [
        RedisStore("redis://127.0.0.1:1/0"),
        SQLiteStore(tmp_path / "missing-dir" / "gateway.db"),
    ]
    for store in stores:
        with pytest.raises(StoreUnavailable):
            await record_outcomes(store, [exposure("r1")], [])
        with pytest.raises(StoreUnavailable):
            await store.exposure("r1")
        with pytest.raises(StoreUnavailable):
            await store.unit_outcomes("exp-1", "latency")
        await store.close()


async def periods(
    store: Store, metric: str, experiment: str = "exp-1"
) -> dict[tuple[str, str], tuple[int, int, float, float]]:
    """period_totals as {(hour, variant): (requests, count, total, squares)}, each listed once."""
    found = await store.period_totals(experiment, metric)
    table = {(p.period, p.variant): (p.requests, p.count, p.total, p.squares) for p in found}
    assert len(table) == len(found)
    return table


async def test_period_sums_of_small_values_keep_their_digits(store: Store) -> None:
    """Cheap calls' costs (1.5e-7 USD) have squares near 2e-14: each hour's sums keep 12 or more
    significant digits (Redis's HINCRBYFLOAT kept 17 decimals: 4 digits of these squares, and
    none of 1e-300)."""
    costs = [1.5e-7 + i * 1e-9 for i in range(10)]
    calls = [exposure(f"c{i}", f"u{i}", cost=cost) for i, cost in enumerate(costs)]
    await record_outcomes(store, calls[:5], [])
    await record_outcomes(store, [*calls[5:], exposure("tiny", latency=1e-300, cost=None)], [])
    (period,) = await store.period_totals("exp-1", "cost_per_task")
    assert period.total == pytest.approx(sum(costs), rel=1e-12, abs=0)
    assert period.squares == pytest.approx(sum(c * c for c in costs), rel=1e-12, abs=0)
    (latency,) = await store.period_totals("exp-1", "latency")
    assert latency.total == pytest.approx(10 * 100.0 + 1e-300, rel=1e-12)


async def test_period_totals_per_hour_and_arm(store: Store) -> None:
    """Exposures count in their own UTC hour and arm; each metric has its count, sum and sum of
    squares (cost only where there is one); other experiments stay apart."""
    later = T0 + timedelta(hours=1, minutes=5)
    await record_outcomes(
        store,
        [
            exposure("r1", latency=100.0),
            exposure("r2", "u2", latency=300.0, cost=None),
            exposure("r3", latency=50.0, variant="treatment")._replace(at=later),
            exposure("r4", experiment="exp-2"),
        ],
        [],
    )
    hour, next_hour = codec.utc_iso(T0)[:13], codec.utc_iso(later)[:13]
    assert await periods(store, "latency") == {
        (hour, "control"): (2, 2, 400.0, 100_000.0),
        (next_hour, "treatment"): (1, 1, 50.0, 2500.0),
    }
    assert await periods(store, "cost_per_task") == {
        (hour, "control"): (2, 1, 0.25, 0.0625),
        (next_hour, "treatment"): (1, 1, 0.25, 0.0625),
    }
    assert await periods(store, "task_completion") == {
        (hour, "control"): (2, 0, 0.0, 0.0),
        (next_hour, "treatment"): (1, 0, 0.0, 0.0),
    }
    assert list(await periods(store, "latency", "exp-2")) == [(hour, "control")]
    assert await store.period_totals("never-ran", "latency") == []
    with pytest.raises(ValueError):
        await store.period_totals("exp-1", "accuracy")


async def test_period_totals_follow_feedback(store: Store) -> None:
    """Feedback counts in its call's hour; a replaced value moves the sums by the difference;
    orphans and a retried batch change nothing."""
    later = T0 + timedelta(hours=3)
    await record_outcomes(store, [exposure("r1"), exposure("r2")._replace(at=later)], [])
    votes = [Feedback("r1", "user_satisfaction", 4.0), Feedback("r2", "user_satisfaction", 2.0)]
    await record_outcomes(store, [], [*votes, Feedback("nobody", "user_satisfaction", 5.0)])
    await record_outcomes(store, [], [Feedback("r1", "user_satisfaction", 3.0)])
    await record_outcomes(store, [exposure("r1")], [Feedback("r1", "user_satisfaction", 3.0)])
    hour, later_hour = codec.utc_iso(T0)[:13], codec.utc_iso(later)[:13]
    assert await periods(store, "user_satisfaction") == {
        (hour, "control"): (1, 1, 3.0, 9.0),
        (later_hour, "control"): (1, 1, 2.0, 4.0),
    }
