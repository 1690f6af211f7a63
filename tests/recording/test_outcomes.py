"""The outcome recorder: what it queues, its bound, and how it rides out a store outage.

The store is a real SQLite file; the outage is a store whose folder does not exist yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
import time
from pathlib import Path

import pytest

from gateway.core.outcomes import Feedback
from gateway.recording import outcomes
from gateway.recording.outcomes import OutcomeRecorder
from gateway.stores.sqlite import SQLiteStore
from gateway.telemetry.attributes import hash_user
from tests.telemetry.test_attributes import PROMPT, RECORD


def record(request_id: str, *, user: str | None = "alice", experiment: str | None = "exp-1"):  # type: ignore[no-untyped-def]
    prompt = dataclasses.replace(
        PROMPT, experiment_id=experiment, assignment="user" if user else "random"
    )
    return dataclasses.replace(
        RECORD,
        request_id=request_id,
        prompt=prompt,
        user_hash=hash_user(user) if user else None,
        start_ns=1_764_000_000_000_000_000,
        duration_s=0.25,
    )


async def test_only_calls_in_an_experiment_become_exposures(tmp_path: Path) -> None:
    """A call in an experiment is written with its unit; one outside any is not recorded."""
    store = SQLiteStore(tmp_path / "g.db")
    recorder = OutcomeRecorder(store, queue_size=100, flush_interval=0.01)
    recorder.calls_finished([record("req_user")])
    recorder.calls_finished([record("req_random", user=None)])
    recorder.calls_finished([record("req_outside", experiment=None)])
    recorder.calls_finished([dataclasses.replace(RECORD, request_id="req_unmanaged", prompt=None)])
    queued = recorder.queued("req_user")  # feedback right after the call finds it unwritten
    assert queued is not None and queued.unit == hash_user("alice")
    assert recorder.queued("req_outside") is None
    await recorder.flush()
    user = await store.exposure("req_user")
    assert user is not None and user.unit == hash_user("alice")
    assert (user.variant, user.version, user.latency_ms, user.cost_usd) == (
        "treatment",
        "1.2.0",
        250.0,
        RECORD.cost_usd,
    )
    random = await store.exposure("req_random")
    assert random is not None and random.unit == "req_random"
    assert await store.exposure("req_outside") is None
    assert await store.exposure("req_unmanaged") is None
    assert user == queued
    # Written, it is the store's to answer: the recorder keeps nothing of it.
    assert recorder.queued("req_user") is None and recorder.queued("req_random") is None


def test_a_queued_call_keeps_neither_its_record_nor_the_collector_busy(tmp_path: Path) -> None:
    """What waits for the store is the exposure's fields, not the call's record (about a third of
    the memory), in a tuple the garbage collector stops tracking after one pass: a queue that
    fills while the store is down costs the collector's full passes nothing."""
    recorder = OutcomeRecorder(SQLiteStore(tmp_path / "g.db"), queue_size=100, flush_interval=1)
    calls = [record(f"req_{i}", user=None if i % 2 else "alice") for i in range(10)]
    held = [sys.getrefcount(call) for call in calls]
    for i in range(10):
        recorder.calls_finished([calls[i]])
    assert [sys.getrefcount(call) for call in calls] == held
    gc.collect()
    assert not any(gc.is_tracked(item) for item in recorder._queue)
    queued = recorder.queued("req_1")
    assert queued is not None and queued.unit == "req_1" and queued.latency_ms == 250.0


async def test_an_exposure_is_found_until_its_batch_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued, or in the batch being written, an exposure is found (feedback posted a moment
    after the call); once its batch is in the store, it is not (the store answers)."""
    monkeypatch.setattr(outcomes, "BATCH_SIZE", 2)
    release = asyncio.Event()

    class SlowStore(SQLiteStore):
        async def record_outcomes(self, exposures, feedback):  # type: ignore[no-untyped-def]
            await release.wait()
            return await super().record_outcomes(exposures, feedback)

    store = SlowStore(tmp_path / "g.db")
    recorder = OutcomeRecorder(store, queue_size=100, flush_interval=0.01)
    for i in range(5):
        recorder.calls_finished([record(f"req_{i}")])
    writing = asyncio.create_task(recorder.write_batch())  # req_0 and req_1, held by the store
    await asyncio.sleep(0.01)
    assert not writing.done()
    found = [recorder.queued(f"req_{i}") for i in range(6)]
    assert [e.request_id if e else None for e in found] == [f"req_{i}" for i in range(5)] + [None]
    release.set()
    await writing
    assert [recorder.queued(f"req_{i}") is not None for i in range(5)] == [False] * 2 + [True] * 3
    assert await store.exposure("req_0") == found[0]
    await recorder.flush()
    assert all(recorder.queued(f"req_{i}") is None for i in range(5))
    assert [await store.exposure(f"req_{i}") for i in range(5)] == found[:5]


async def test_a_request_id_served_twice_is_found_as_the_store_keeps_it(
    tmp_path: Path,
) -> None:
    """Both stores keep a request id's first exposure; so does the queue's reader."""
    store = SQLiteStore(tmp_path / "g.db")
    recorder = OutcomeRecorder(store, queue_size=100, flush_interval=0.01)
    recorder.calls_finished([record("req_twice", user="first")])
    recorder.calls_finished([record("req_twice", user="second")])
    queued = recorder.queued("req_twice")
    assert queued is not None and queued.unit == hash_user("first")
    await recorder.flush()
    assert queued == await store.exposure("req_twice")


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    """Past the queue's bound exposures are dropped and counted; feedback is refused (503)."""
    recorder = OutcomeRecorder(SQLiteStore(tmp_path / "g.db"), queue_size=3, flush_interval=1)
    for i in range(5):
        recorder.calls_finished([record(f"req_{i}")])
    assert recorder.dropped_exposures == 2
    assert recorder.feedback(Feedback("req_0", "user_satisfaction", 3)) is False


def test_a_batch_queues_its_experiment_calls_in_order_up_to_the_bound(tmp_path: Path) -> None:
    """Calls finished together: those served in an experiment are queued in the order they
    finished, the others skipped; what does not fit the queue is dropped and counted."""
    recorder = OutcomeRecorder(SQLiteStore(tmp_path / "g.db"), queue_size=2, flush_interval=1)
    unmanaged = dataclasses.replace(RECORD, request_id="req_unmanaged", prompt=None)
    batch = [record("r0"), record("r1", experiment=None), record("r2"), record("r3"), unmanaged]
    recorder.calls_finished(batch)
    assert [item[0] for item in recorder._queue] == ["r0", "r2"]  # type: ignore[index]
    assert recorder.dropped_exposures == 1
    recorder.calls_finished([record("r4")])
    assert recorder.dropped_exposures == 2 and recorder.queued("r4") is None


async def test_an_outage_loses_nothing_that_fits_the_queue(tmp_path: Path) -> None:
    """While the store is down the batch is retried; once it is back everything is written."""
    folder = tmp_path / "later"
    store = SQLiteStore(folder / "g.db")
    recorder = OutcomeRecorder(store, queue_size=100, flush_interval=0.01)
    recorder.start()
    try:
        for i in range(10):
            recorder.calls_finished([record(f"req_{i}", user=f"u{i}")])
        recorder.feedback(Feedback("req_3", "user_satisfaction", 5))
        await asyncio.sleep(0.1)  # several failed writes
        assert all(recorder.queued(f"req_{i}") is not None for i in range(10))
        folder.mkdir()
        deadline = time.monotonic() + 10
        while await _exposed(store) < 10:
            assert time.monotonic() < deadline, "the queued exposures were never written"
            await asyncio.sleep(0.05)
    finally:
        await recorder.stop()
    assert recorder.dropped_exposures == 0
    units = await store.unit_outcomes("exp-1", "user_satisfaction")
    assert sum(u.count for u in units) == 1 and sum(u.requests for u in units) == 10


async def _exposed(store: SQLiteStore) -> int:
    try:
        return sum(u.requests for u in await store.unit_outcomes("exp-1", "latency"))
    except Exception:
        return 0
