"""Hostile exposure inputs: what Redis reads back, and the totals it keeps, equal SQLite's.

Redis's script writes exposure documents itself from the fields Python sends (strings by
cjson, numbers at 17 significant digits); SQLite binds them. Each input here is written to both
and compared in value and type, with the unit, arm and period totals after feedback. Documents
written before the script made them (orjson's, from Python) must still read and take feedback.
"""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from gateway.core.outcomes import (
    EPOCH,
    MICROSECOND,
    PERIOD_CHARS,
    Exposure,
    Feedback,
    exposure_row,
)
from gateway.stores import codec
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore
from tests.outcome_rows import record_outcomes

AT = datetime(2026, 11, 1, 11, 30, 15, 123456, tzinfo=UTC)


def exposure(request_id: str, **fields: object) -> Exposure:
    base = Exposure(request_id, "exp-1", "control", "1.0.0", "u1", AT, 100.0, 12, 34, 0.25, 200)
    return base._replace(**fields)


def kinds(e: Exposure | None) -> list[tuple[object, str]]:
    """Each field with its type's name: 250 and 250.0 are equal, yet not the same answer."""
    assert e is not None
    return [(v, type(v).__name__) for v in e]


HELD = {
    "quotes": {"unit": "a\"b'c", "version": 'v"1', "experiment_id": 'e"x'},
    "backslashes": {"unit": "a\\b\\\\", "version": "\\u0041"},
    "controls": {"unit": "a\x00b\x01\x1f\x7f\n\t\r", "version": "\x08\x0c"},
    "emoji": {"unit": "😀𝄞", "version": "ü€😀", "experiment_id": "exp-😀"},
    "separators": {"unit": "a/b</script>\u2028\u2029\ufeff\uffff", "trace_id": "</"},
    "long": {"unit": "u" * 100_000},
    "empty": {"unit": "", "version": "", "trace_id": ""},
    "json-like": {"unit": "1e5", "version": "null", "trace_id": "true"},
    "tiny": {"latency_ms": 1e-300, "cost_usd": 5e-324},
    "ints": {"latency_ms": 250, "cost_usd": 3},
    "none": {"cost_usd": None, "input_tokens": None, "output_tokens": None},
    "tokens": {"input_tokens": 2**32 - 1, "output_tokens": 0},
    "naive": {"at": datetime(2026, 11, 1, 11, 30, 15)},
    "whole-second": {"at": datetime(2026, 11, 1, 11, 0, tzinfo=UTC)},
    "+05:30": {"at": datetime(2026, 11, 1, 3, 0, 0, 5, tzinfo=timezone(timedelta(hours=5.5)))},
    "odd-offset": {"at": datetime(2026, 1, 1, 3, tzinfo=timezone(timedelta(seconds=3607)))},
    "1960": {"at": datetime(1960, 5, 5, 5, 5, 5, tzinfo=UTC)},
    "first": {"at": datetime(1900, 1, 1, tzinfo=UTC)},
    "leap-day": {"at": datetime(2000, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)},
    "1900-not-leap": {"at": datetime(1900, 3, 1, 0, 0, 0, 1, tzinfo=UTC)},
    "last": {"at": datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)},
}


@pytest.mark.parametrize("name", list(HELD))
async def test_redis_reads_back_what_sqlite_does(name: str, redis_url: str, tmp_path: Path) -> None:
    """Redis gives back the Exposure SQLite gives back (value and type), and the same unit, arm
    and period totals after feedback."""
    fields = dict(HELD[name])
    batch = [
        exposure(f"{name}-{i}", variant=("control", "treatment")[i % 2], **fields) for i in range(4)
    ]
    votes = [
        Feedback(f"{name}-0", "user_satisfaction", 4.0),
        Feedback(f"{name}-1", "task_completion", 1.0),
    ]
    sqlite = SQLiteStore(tmp_path / "g.db")
    redis_store = RedisStore(redis_url, prefix=f"inputs-{uuid.uuid4().hex[:8]}:")
    try:
        for s in (sqlite, redis_store):
            await record_outcomes(s, batch, [])
            await record_outcomes(s, [], votes)
        for e in batch:
            assert kinds(await redis_store.exposure(e.request_id)) == kinds(
                await sqlite.exposure(e.request_id)
            )
        experiment = batch[0].experiment_id
        for metric in ("latency", "cost_per_task", "user_satisfaction", "task_completion"):
            a, b = (
                await sqlite.arm_totals(experiment, metric),
                await redis_store.arm_totals(experiment, metric),
            )
            for x, y in zip(a, b, strict=True):
                assert (x.users, x.requests, x.with_value) == (y.users, y.requests, y.with_value)
                assert (x.mean is None) == (y.mean is None)
                assert math.isclose(x.mean or 0, y.mean or 0, rel_tol=1e-9, abs_tol=1e-300)
            pa = await sqlite.period_totals(experiment, metric)
            pb = await redis_store.period_totals(experiment, metric)
            assert sorted((p.period, p.variant, p.requests, p.count) for p in pa) == sorted(
                (p.period, p.variant, p.requests, p.count) for p in pb
            )
    finally:
        await sqlite.close()
        await redis_store.close()


async def test_documents_written_by_python_are_read_and_take_feedback(
    redis_url: str,
) -> None:
    """A document as Python wrote it before the script did (orjson of the fields: 250 as an
    int, 10 fields without a trace id) reads back, and feedback on it moves its unit and period
    totals."""
    store = RedisStore(redis_url, prefix="old-format:")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(*[k async for k in client.scan_iter("old-format:*")] or ["x"])
        await record_outcomes(store, [exposure("old", unit='ü"x')], [])
        legacy = [
            "exp-1",
            "control",
            "1.0.0",
            'ü"x',
            "2026-11-01T11:30:15.123456+00:00",
            250,
            12,
            34,
            None,
            200,
        ]
        await client.hset("old-format:exposures", "old", orjson.dumps(legacy))
        stored = await store.exposure("old")
        assert (
            stored is not None and stored.latency_ms == 250.0 and type(stored.latency_ms) is float
        )
        assert (stored.unit, stored.cost_usd, stored.trace_id) == ('ü"x', None, None)
        await record_outcomes(store, [], [Feedback("old", "user_satisfaction", 3.0)])
        await record_outcomes(store, [], [Feedback("old", "user_satisfaction", 5.0)])
        (unit,) = await store.unit_outcomes("exp-1", "user_satisfaction")
        assert (unit.unit, unit.total, unit.count) == ('ü"x', 5.0, 1)
        (period,) = await store.period_totals("exp-1", "user_satisfaction")
        assert (period.period, period.count, period.total, period.squares) == (
            "2026-11-01T11",
            1,
            5.0,
            25.0,
        )
    finally:
        await client.aclose()
        await store.close()


@pytest.mark.parametrize(
    "at",
    [
        datetime(1899, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2200, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
async def test_a_time_outside_1900_to_2199_is_refused_by_both_stores(
    at: datetime, redis_url: str, tmp_path: Path
) -> None:
    """The batch is refused before anything of it is written, on either store."""
    sqlite = SQLiteStore(tmp_path / "g.db")
    redis_store = RedisStore(redis_url, prefix=f"inputs-{uuid.uuid4().hex[:8]}:")
    try:
        for s in (sqlite, redis_store):
            batch = [exposure("fine"), exposure("odd", at=at)]
            with pytest.raises(ValueError, match="from 1900 to 2199"):
                await record_outcomes(s, batch, [])
            assert await s.exposure("fine") is None
    finally:
        await sqlite.close()
        await redis_store.close()


async def test_the_script_writes_every_time_as_python_does(redis_url: str) -> None:
    """Redis's script makes each exposure's time text from its microseconds: the same text
    `codec.utc_text` makes (and SQLite stores), at the range's ends, around leap days, on whole
    seconds and for 3,000 random times, and the hour it adds the exposure to is that text's."""
    rng = random.Random(7)
    first, end = codec.FIRST_AT_US, codec.END_AT_US
    day = 86_400 * 10**6
    edges = [first, first + 1, end - 1, end - 10**6, 0, -1, 1, 10**6 - 1]
    leap = [
        (datetime(year, month, d, tzinfo=UTC) - EPOCH) // MICROSECOND + shift
        for year in (1900, 1904, 2000, 2024, 2100, 2196)
        for month, d in ((2, 28), (3, 1), (12, 31))
        for shift in (-1, 0, 1, day - 1)
    ]
    spread = [rng.randrange(first, end) for _ in range(3_000)]
    whole = [rng.randrange(first // 10**6, end // 10**6) * 10**6 for _ in range(200)]
    times = [t for t in edges + leap + spread + whole if first <= t < end]
    store = RedisStore(redis_url, prefix=f"times-{uuid.uuid4().hex[:8]}:")
    client = aioredis.Redis.from_url(redis_url)
    try:
        rows = [
            exposure_row(exposure(f"t{i}", unit=f"u{i}", at=EPOCH + t * MICROSECOND))
            for i, t in enumerate(times)
        ]
        assert [row[5] for row in rows] == times
        await store.record_outcomes(rows, [])
        docs = await client.hmget(f"{store.prefix}exposures", [f"t{i}" for i in range(len(times))])
        texts = [orjson.loads(doc)[4] for doc in docs]
        assert texts == [codec.utc_text(t) for t in times]
        hours = await client.hkeys(f"{store.prefix}periods:exp-1")
        assert {h.decode().split("|")[0] for h in hours} == {t[:PERIOD_CHARS] for t in texts}
    finally:
        await client.aclose()
        await store.close()
