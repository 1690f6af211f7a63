"""SQLite's write of experiment exposures alone: CPU time per exposure, outside the gateway.

Run: python benchmarks/bench_exposure_write.py [--stored 50000] [--batch 500] [--batches 120]

A fresh SQLite store in a temporary directory is filled with `--stored` exposures, then
`--batches` batches of `--batch` more are written one at a time through the store's own
`write_outcomes` (what the outcome writer process runs: one IMMEDIATE transaction, the outcome
connection kept open, `synchronous=NORMAL`). Each exposure is a randomly assigned call, as in
`bench_proxy.py --experiment`: a time-ordered request id (`new_request_id`) that is also its
unit, one of two arms, a cost. Prints the median of the batches' CPU time (`time.process_time`)
per exposure, the first ten batches left out. The figures in benchmarks/README.md's experiment
sections that say "the write alone" come from this.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.outcomes import Exposure, ExposureRow, exposure_row
from gateway.service import new_request_id
from gateway.stores.sqlite import SQLiteStore

WARM_BATCHES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=50_000, help="exposures stored first")
    parser.add_argument("--batch", type=int, default=500, help="exposures per measured batch")
    parser.add_argument("--batches", type=int, default=120, help="measured batches")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gateway-exposure-write-"))
    try:
        store = SQLiteStore(work / "outcomes.db")
        for _ in range(0, args.stored, 5_000):
            store.write_outcomes(exposures(5_000), [])
        per_exposure = []
        for number in range(args.batches):
            batch = exposures(args.batch)
            start = time.process_time()
            store.write_outcomes(batch, [])
            if number >= WARM_BATCHES:
                per_exposure.append((time.process_time() - start) / args.batch * 1e6)
        print(
            f"{args.batch}-exposure batches into a store of {args.stored:,}: "
            f"{statistics.median(per_exposure):.2f} µs of CPU per exposure "
            f"(median of {len(per_exposure)} batches)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def exposures(count: int) -> list[ExposureRow]:
    """`count` randomly assigned calls of one experiment, as the recorder hands them over."""
    made = []
    for _ in range(count):
        request_id = new_request_id(None)
        variant = random.choice(("control", "treatment"))
        made.append(
            exposure_row(
                Exposure(
                    request_id=request_id,
                    experiment_id="bench",
                    variant=variant,
                    version="1.0.0" if variant == "control" else "1.1.0",
                    unit=request_id,
                    at=datetime.now(UTC),
                    latency_ms=random.uniform(5.0, 50.0),
                    input_tokens=40,
                    output_tokens=20,
                    cost_usd=0.0001,
                    status=200,
                    trace_id=None,
                )
            )
        )
    return made


if __name__ == "__main__":
    main()
