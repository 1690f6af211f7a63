"""Experiment exposures and feedback, queued by the request path and written in batches.

`OutcomeRecorder.calls_finished` (a BatchObserver of finished calls) queues every call served
in an experiment as an exposure; `POST /v1/feedback` adds `Feedback`. Both go into one bounded
queue, in arrival order, which a background task drains into `store.record_outcomes` every
`flush_interval` seconds or as soon as a batch is full. The call never waits: a full queue drops
the exposure and counts it (`gateway_exposures_dropped_total`). While the store is down, the batch
being written is retried and the queue keeps filling up to its bound, so an outage loses at most
what does not fit, counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence

from gateway.core.outcomes import Exposure, ExposureRow, Feedback, exposure_of
from gateway.errors import StoreUnavailable
from gateway.recording.batches import BatchWriter
from gateway.stores.base import OutcomeStore
from gateway.telemetry.events import CallRecord

log = logging.getLogger("gateway.recording")

BATCH_SIZE = 5000
MAX_BACKOFF = 5.0


class OutcomeRecorder(BatchWriter):
    """Queues exposures and feedback; a background task writes them in batches."""

    what = "experiment outcomes"

    def __init__(self, store: OutcomeStore, *, queue_size: int, flush_interval: float) -> None:
        super().__init__(flush_interval=flush_interval, max_backoff=MAX_BACKOFF)
        self._store = store
        self._queue: deque[ExposureRow | Feedback] = deque()
        self._queue_size = queue_size
        self._wake = asyncio.Event()
        self._pending: list[ExposureRow | Feedback] = []
        self.dropped_exposures = 0
        """Exposures lost: the queue was full, or the store never took them before shutdown."""
        self.orphans = 0
        """Feedback the store ignored because no exposure was stored for its request."""

    # ---- the request path: enqueue only ----------------------------------------------------------

    def calls_finished(self, records: Sequence[CallRecord]) -> None:
        """Queue the exposures of the calls served in an experiment (others are not recorded),
        as the gateway hands over the calls finished together.

        What is queued is each exposure's row (`ExposureRow`: a plain tuple, its time in
        microseconds), and the store writes it as it is. The call's record is not kept: queued,
        a record held 1,330 bytes per call, a row about 450 (the gateway's memory while the
        store was down, benchmarks/README.md), and the collector untracks the row after one
        pass, where every full pass walked the queued records. Nothing else is kept per call:
        feedback finds an unwritten exposure by reading the queue (`queued`). One list per
        batch: the recorder called once per call cost about 1,900 instructions more per
        exposure (4,450 against 2,580; callgrind, 5,000 calls handed over 16 at a time).
        """
        rows = [
            (
                r.request_id,
                p.experiment_id,
                p.variant,
                p.version,
                r.user_hash or r.request_id if p.assignment == "user" else r.request_id,
                r.start_ns // 1000,
                r.duration_s * 1000,
                r.input_tokens,
                r.output_tokens,
                r.cost_usd,
                r.status,
                r.trace_id,
            )
            for r in records
            if (p := r.prompt) is not None and p.experiment_id is not None
        ]
        if not rows:
            return
        queue = self._queue
        room = max(0, self._queue_size - len(queue) - len(self._pending))
        if len(rows) > room:
            self.dropped_exposures += len(rows) - room
            del rows[room:]
        queue.extend(rows)
        if len(queue) >= BATCH_SIZE:
            self._wake.set()

    def feedback(self, feedback: Feedback) -> bool:
        """Queue a feedback value; False when the queue is full (the caller answers 503)."""
        if len(self._queue) + len(self._pending) >= self._queue_size:
            return False
        self._queue.append(feedback)
        if len(self._queue) >= BATCH_SIZE:
            self._wake.set()
        return True

    def queued(self, request_id: str) -> Exposure | None:
        """The exposure of `request_id` if this process has not written it yet (queued, or in
        the batch being written; the first, as the stores keep a request id's first); None:
        the store has it, or another process served the call, or nobody did.

        A scan of the queue, for feedback posted before the call's batch reached the store (or
        while the store is down): about 28 µs per thousand queued (3.4 ms at the default bound,
        100,000). Kept off the request path, where an index cost every call an insertion and a
        removal."""
        for items in (self._pending, self._queue):
            for item in items:
                if type(item) is tuple and item[0] == request_id:
                    return exposure_of(item)
        return None

    # ---- the writer ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Write what is queued (one try), then stop. What the store refuses is counted lost."""
        await self.cancel()
        while self._pending or self._queue:
            if not self._pending:
                self._take()
            try:
                await self._write()
            except StoreUnavailable as exc:
                lost = _exposures_in(self._pending) + _exposures_in(self._queue)
                self.dropped_exposures += lost
                log.error("stopping with %d exposures unwritten: %s", lost, exc.message)
                self._pending.clear()
                self._queue.clear()

    async def flush(self) -> None:
        """Write everything queued now (tests and shutdown); raises StoreUnavailable."""
        while self._pending or self._queue:
            if not self._pending:
                self._take()
            await self._write()

    async def wait(self, seconds: float) -> None:
        """Until the tick, or sooner when a full batch waits."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def write_batch(self) -> None:
        # One batch per tick (more only while full batches wait): a write takes time, and what
        # arrives meanwhile waits for the next tick, so batches stay large and the cost of a
        # write (a transaction, a thread hand-off) is shared by many.
        if not self._pending:
            self._take()
        if self._pending:
            await self._write()
        if len(self._queue) >= BATCH_SIZE:
            self._wake.set()

    def drop_pending(self) -> None:
        self.dropped_exposures += _exposures_in(self._pending)
        self._pending = []

    def _take(self) -> None:
        queue = self._queue
        if len(queue) <= BATCH_SIZE:  # the usual case: all of it, copied in C
            self._pending = list(queue)
            queue.clear()
        else:
            self._pending = [queue.popleft() for _ in range(BATCH_SIZE)]

    async def _write(self) -> None:
        batch = self._pending
        exposures = [i for i in batch if type(i) is tuple]
        feedback = [i for i in batch if type(i) is Feedback] if len(exposures) < len(batch) else []
        recorded = await self._store.record_outcomes(exposures, feedback)
        self.orphans += recorded.orphans
        self._pending = []


def _exposures_in(items: Iterable[ExposureRow | Feedback]) -> int:
    """How many of `items` are exposures (the rest is feedback)."""
    return sum(type(item) is tuple for item in items)
