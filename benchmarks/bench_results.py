"""Experiment outcomes at scale: 1,000,000 exposures into both stores, then per-unit results read.

Run: python benchmarks/bench_results.py   (redis-server on PATH; --exposures, --users to shrink)

One experiment, two arms split 50/50 by the gateway's own assignment, 100,000 users and about 10
calls each (each call picks a user at random). 30% of calls get a task_completion value and 15% a
user_satisfaction rating, sent in the batch after their call's, as apps report them later. Both
stores are fresh: a SQLite file in a temporary directory and a redis-server of this script's own on
a free loopback port (`--save "" --appendonly no`), stopped at the end. Everything goes through
`record_outcomes` in batches of 5,000 exposures, as the recorder writes them.

Then, for each metric, `unit_outcomes` (one row per unit) is timed, median of 5, and when
`gateway.core.stats` is importable so is `analyze` on those units (the statistics of the results
endpoint); without that module only `unit_outcomes` is timed and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.core.experiments import in_treatment
from gateway.core.model import Experiment
from gateway.core.outcomes import Exposure, ExposureRow, Feedback, exposure_row
from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore

try:
    from gateway.core.stats import analyze
except ImportError:  # the statistics module is not there yet: only the store reads are timed
    analyze = None

METRICS = ("latency", "cost_per_task", "user_satisfaction", "task_completion")
T0 = datetime(2026, 11, 23, tzinfo=UTC)
EXPERIMENT = Experiment(
    id="bench-exp",
    prompt_name="support-agent",
    control_version="1.0.0",
    treatment_version="1.1.0",
    traffic_split=0.5,
    start=T0,
    end=None,
    metric="latency",
    status="running",
    created_at=T0,
    created_by="bench",
)

Batch = tuple[list[ExposureRow], list[Feedback]]


def make_batches(exposures: int, users: int, batch_size: int, seed: int = 2026) -> list[Batch]:
    """The whole workload, built before any clock starts; feedback trails its call by a batch."""
    rng = random.Random(seed)
    keys = [f"user-{i}" for i in range(users)]
    units = [hashlib.sha256(k.encode()).hexdigest()[:32] for k in keys]  # as telemetry hashes
    treated = [in_treatment(k, EXPERIMENT.id, EXPERIMENT.traffic_split) for k in keys]
    batches: list[Batch] = []
    pending: list[Feedback] = []
    for start in range(0, exposures, batch_size):
        calls: list[ExposureRow] = []
        later: list[Feedback] = []
        for n in range(start, min(start + batch_size, exposures)):
            user = rng.randrange(users)
            treatment = treated[user]
            request_id = f"req_{rng.getrandbits(128):032x}"
            calls.append(
                exposure_row(
                    Exposure(
                        request_id=request_id,
                        experiment_id=EXPERIMENT.id,
                        variant="treatment" if treatment else "control",
                        version="1.1.0" if treatment else "1.0.0",
                        unit=units[user],
                        at=T0 + timedelta(milliseconds=n),
                        latency_ms=rng.lognormvariate(6.5 if treatment else 6.6, 0.4),
                        input_tokens=rng.randrange(200, 2000),
                        output_tokens=rng.randrange(20, 600),
                        cost_usd=None if rng.random() < 0.05 else rng.uniform(0.0002, 0.002),
                        status=200,
                    )
                )
            )
            if rng.random() < 0.30:
                done = rng.random() < (0.64 if treatment else 0.61)
                later.append(Feedback(request_id, "task_completion", 1.0 if done else 0.0))
            if rng.random() < 0.15:
                later.append(Feedback(request_id, "user_satisfaction", float(rng.randint(1, 5))))
        batches.append((calls, pending))
        pending = later
    batches.append(([], pending))
    return batches


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of our own on a free loopback port, persisting nothing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.02)
    process.terminate()
    raise SystemExit(f"redis-server did not listen on 127.0.0.1:{port} within 10 s")


async def fill(store: Store, batches: list[Batch]) -> tuple[float, int, int, int]:
    """Seconds to record every batch, and the exposures, feedback and orphans the store counted."""
    written = applied = orphans = 0
    start = time.perf_counter()
    for calls, feedback in batches:
        recorded = await store.record_outcomes(calls, feedback)
        written += recorded.exposures
        applied += recorded.feedback
        orphans += recorded.orphans
    return time.perf_counter() - start, written, applied, orphans


async def median_ms(call: Callable[[], Awaitable[object]], rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def measure(store: Store) -> dict[str, tuple[int, float, float | None]]:
    """Per metric: units listed, unit_outcomes ms and analyze ms (None without the module)."""
    rows = {}
    for metric in METRICS:
        units = await store.unit_outcomes(EXPERIMENT.id, metric)
        read = await median_ms(lambda m=metric: store.unit_outcomes(EXPERIMENT.id, m))
        analysis = None
        if analyze is not None:
            experiment = replace(EXPERIMENT, metric=metric)

            async def run(e: Experiment = experiment, u: list = units) -> object:  # type: ignore[type-arg]
                return analyze(e, u, alpha=0.05, min_units=100)

            analysis = await median_ms(run)
        rows[metric] = (len(units), read, analysis)
    return rows


def redis_memory(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("memory")["used_memory_human"])
    finally:
        client.close()


def sqlite_size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return f"{total / 2**20:.0f}M"


def table(rows: list[tuple[str, ...]]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        yield (
            "| "
            + " | ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )
        if n == 0:
            yield "| " + " | ".join("-" * w for w in widths) + " |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()

    start = time.perf_counter()
    batches = make_batches(args.exposures, args.users, args.batch)
    feedback = sum(len(f) for _, f in batches)
    print(
        f"workload: {args.exposures:,} exposures from {args.users:,} users, {feedback:,} feedback "
        f"values, {len(batches)} batches (built in {time.perf_counter() - start:.1f} s)"
    )

    process, url = start_redis()
    results: dict[str, dict[str, tuple[int, float, float | None]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gateway.db"
            stores: dict[str, Store] = {"sqlite": SQLiteStore(path), "redis": RedisStore(url)}
            for name, store in stores.items():
                seconds, written, applied, orphans = await fill(store, batches)
                size = sqlite_size(path) if name == "sqlite" else redis_memory(url)
                print(
                    f"{name}: filled in {seconds:.1f} s ({written / seconds:,.0f} exposures/s); "
                    f"recorded {written:,} exposures, {applied:,} feedback, {orphans} orphans; "
                    f"{size} on {'disk' if name == 'sqlite' else 'the server'}"
                )
            # Reads are timed in a process that no longer holds a million exposures, as a gateway
            # does not: otherwise each garbage collection would walk them and bill the reads.
            del batches
            gc.collect()
            for name, store in stores.items():
                results[name] = await measure(store)
                await store.close()
    finally:
        process.terminate()
        process.wait(timeout=10)

    header = ("metric", "units", "sqlite unit_outcomes ms", "redis unit_outcomes ms")
    if analyze is not None:
        header += ("analyze ms",)
    rows = [header]
    for metric in METRICS:
        units, sqlite_ms, analysis = results["sqlite"][metric]
        row = (metric, f"{units:,}", f"{sqlite_ms:.0f}", f"{results['redis'][metric][1]:.0f}")
        if analysis is not None:
            row += (f"{analysis:.0f}",)
        rows.append(row)
    print()
    print("\n".join(table(rows)))
    print()
    print("Median of 5 reads of every unit of the experiment, in milliseconds.")
    if analyze is None:
        print("gateway.core.stats is not importable here: only unit_outcomes is timed.")


if __name__ == "__main__":
    asyncio.run(main())
