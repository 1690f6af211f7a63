"""SQLite's exposure writer: the stored time, and batches of every size the chunking meets."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.core.outcomes import Exposure, Feedback
from gateway.stores import codec
from gateway.stores.sqlite import SQLiteStore
from tests.outcome_rows import record_outcomes


def test_stored_time_is_the_iso_form_of_every_kind_of_time() -> None:
    """`codec.utc_iso` (orjson's RFC 3339 text) gives exactly `isoformat` in UTC: with and without
    microseconds, other offsets, naive times, 10,000 random instants across years, and the ends
    of the calendar."""
    rng = random.Random(7)
    base = datetime(2026, 3, 1, 14, 5, 9, tzinfo=UTC)
    times = [
        base,
        base.replace(microsecond=1),
        base.replace(microsecond=999_999),
        base.astimezone(timezone(timedelta(hours=5, minutes=30))),
        base.replace(tzinfo=None),
        datetime(1970, 1, 1, tzinfo=UTC),
    ]
    times += [base + timedelta(microseconds=rng.randrange(10**15)) for _ in range(10_000)]
    times += [base + timedelta(microseconds=rng.randrange(3 * 10**6)) for _ in range(2_000)]
    # Before 1970, the end of year 9999, the start of year 1, and the end of 32-bit seconds (in
    # this order each pair once put a wrong second in a per-second cache for the next).
    times += [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 58, 999_999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC),
        datetime.fromtimestamp(2**32 - 1, UTC).replace(microsecond=999_999),
        datetime.fromtimestamp(2**32, UTC),
    ]
    for at in times:
        utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        assert codec.utc_iso(at) == utc.isoformat(), at


@pytest.mark.parametrize("size", [1, 9, 10, 11, 99, 100, 101, 537])
async def test_a_batch_of_any_size_is_written_whole(tmp_path: Path, size: int) -> None:
    """Every row of a batch is stored once and counted in its unit, across the 100/10/1-row
    statements; a second batch with half of the ids again writes only the new half."""
    store = SQLiteStore(tmp_path / "g.db")
    at = datetime(2026, 3, 1, 14, 5, 9, 250_000, tzinfo=UTC)

    def exposure(i: int) -> Exposure:
        variant = "control" if i % 2 else "treatment"
        return Exposure(
            f"req_{i:06d}", "exp-1", variant, "1.0.0", f"u{i % 7}", at, 10.0 + i, 3, 4, 0.5, 200
        )

    first = await record_outcomes(store, [exposure(i) for i in range(size)], [])
    assert first.exposures == size
    again = await record_outcomes(store, [exposure(i) for i in range(size // 2, size + size)], [])
    assert again.exposures == size
    units = await store.unit_outcomes("exp-1", "latency")
    assert sum(u.requests for u in units) == 2 * size
    assert sum(u.total for u in units) == pytest.approx(sum(10.0 + i for i in range(2 * size)))
    stored = await store.exposure(f"req_{size - 1:06d}")
    assert stored == exposure(size - 1)
    periods = await store.period_totals("exp-1", "cost_per_task")
    assert sum(p.count for p in periods) == 2 * size


async def test_a_file_from_before_feedback_times_gets_them(tmp_path: Path) -> None:
    """A database whose feedback table has no `at` column (made before feedback kept the time
    it was taken) gets it on opening; its stored values count as the oldest."""
    path = tmp_path / "g.db"
    old = SQLiteStore(path)
    at = datetime(2026, 11, 1, 11, tzinfo=UTC)
    call = Exposure("r1", "exp-1", "control", "1.0.0", "u1", at, 100.0, 1, 1, None, 200)
    await record_outcomes(old, [call], [Feedback("r1", "user_satisfaction", 4.0, at=9)])
    await old.close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE feedback DROP COLUMN at")
    store = SQLiteStore(path)
    try:
        untimed = await record_outcomes(store, [], [Feedback("r1", "user_satisfaction", 1.0)])
        later = await record_outcomes(store, [], [Feedback("r1", "user_satisfaction", 2.0, at=5)])
        assert (untimed.feedback, later.feedback) == (1, 1)  # time 0 against 0, then 5 against 0
        stale = await record_outcomes(store, [], [Feedback("r1", "user_satisfaction", 3.0, at=4)])
        assert stale.feedback == 0
        (unit,) = await store.unit_outcomes("exp-1", "user_satisfaction")
        assert (unit.total, unit.count) == (2.0, 1)
    finally:
        await store.close()
