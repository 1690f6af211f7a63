"""The capture recorder: it counts system texts of unmanaged calls and writes them in batches.

The store is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from gateway.core.capture import CallShape, fingerprint
from gateway.recording.capture import CaptureRecorder
from gateway.stores.sqlite import SQLiteStore
from tests.telemetry.test_attributes import PROMPT, RECORD

TEXT = "You are the assistant of Acme."


def record(*texts: str, status: int = 200, managed: bool = False):  # type: ignore[no-untyped-def]
    return dataclasses.replace(
        RECORD,
        prompt=PROMPT if managed else None,
        status=status,
        request_model="gpt-4o-mini",
        temperature=None,
        max_tokens=None,
        start_ns=1_764_000_000_000_000_000,
        system_texts=tuple(("system", t) for t in texts),
    )


async def test_unmanaged_answered_calls_are_counted_and_written(tmp_path: Path) -> None:
    """Answered unmanaged calls are counted per text; managed and failed calls are not."""
    store = SQLiteStore(tmp_path / "g.db")
    recorder = CaptureRecorder(store, limit=100, queue_size=100, flush_interval=60)
    for _ in range(3):
        recorder.call_finished(record(TEXT))
    recorder.call_finished(record(TEXT, "Be brief."))
    recorder.call_finished(record(TEXT, managed=True))
    recorder.call_finished(record(TEXT, status=500))
    recorder.call_finished(record())
    await recorder.flush()
    found = {p.sample: p for p in await store.captured()}
    assert {s: p.count for s, p in found.items()} == {TEXT: 4, "Be brief.": 1}
    assert found[TEXT].fingerprint == fingerprint(TEXT)
    assert found[TEXT].shapes == {CallShape("gpt-4o-mini", None, None): 4}
    recorder.call_finished(record(TEXT))
    await recorder.flush()
    assert {p.sample: p.count for p in await store.captured()}[TEXT] == 5


async def test_the_table_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    """Beyond queue_size distinct texts, new ones are dropped and counted; known ones count."""
    store = SQLiteStore(tmp_path / "g.db")
    recorder = CaptureRecorder(store, limit=100, queue_size=2, flush_interval=60)
    for text in ("a", "b", "c", "d", "a"):
        recorder.call_finished(record(text))
    assert recorder.dropped == 2
    await recorder.flush()
    assert sorted((p.sample, p.count) for p in await store.captured()) == [("a", 2), ("b", 1)]


async def test_the_writer_runs_in_the_background(tmp_path: Path) -> None:
    """Started, the recorder writes within its flush interval; stop writes the rest."""
    store = SQLiteStore(tmp_path / "g.db")
    recorder = CaptureRecorder(store, limit=100, queue_size=100, flush_interval=0.01)
    recorder.start()
    recorder.call_finished(record(TEXT))
    deadline = time.monotonic() + 5
    while not await store.captured():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    recorder.call_finished(record("later"))
    await recorder.stop()
    assert {p.sample for p in await store.captured()} == {TEXT, "later"}


async def test_an_unreachable_store_keeps_the_batch(tmp_path: Path) -> None:
    """While the store is down the batch is kept, and written once it answers again."""
    store = SQLiteStore(tmp_path / "missing" / "g.db")
    recorder = CaptureRecorder(store, limit=100, queue_size=100, flush_interval=0.01)
    recorder.start()
    recorder.call_finished(record(TEXT))
    await asyncio.sleep(0.05)
    (tmp_path / "missing").mkdir()
    deadline = time.monotonic() + 10
    while not await store.captured():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await recorder.stop()
    assert recorder.dropped == 0
