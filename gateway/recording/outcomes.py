"""Experiment exposures and feedback, queued by the request path and written in batches.

`OutcomeRecorder.call_finished` (an Observer of finished calls) queues every call served in an
experiment as an exposure; `POST /v1/feedback` adds `Feedback`. Both go into one bounded
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
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import islice

from gateway.core.outcomes import Exposure, Feedback
from gateway.errors import StoreUnavailable
from gateway.recording.batches import BatchWriter
from gateway.stores.base import OutcomeStore
from gateway.telemetry.events import CallRecord

log = logging.getLogger("gateway.recording")

BATCH_SIZE = 5000
MAX_BACKOFF = 5.0
RECENT = 10_000
"""Written exposures remembered in memory, so feedback posted in the seconds after a call is
checked without reading the store, and still accepted while the store is down."""


class OutcomeRecorder(BatchWriter):
    """Queues exposures and feedback; a background task writes them in batches."""

    what = "experiment outcomes"

    def __init__(self, store: OutcomeStore, *, queue_size: int, flush_interval: float) -> None:
        super().__init__(flush_interval=flush_interval, max_backoff=MAX_BACKOFF)
        self._store = store
        self._queue: deque[Pending | Feedback] = deque()
        self._queue_size = queue_size
        self._recent: dict[str, Pending] = {}
        """The exposures queued, being written, and the last RECENT written, by request id, in
        the order they were queued: feedback posted right after a call, before its batch
        reaches the store, or while the store is down, is checked here. One index for both
        (the unwritten are its newest entries), so a call costs one insertion and, once written,
        one removal from its front. Held as queued: a tuple of strings and numbers is untracked
        by the garbage collector after its first pass (an `Exposure`, a tuple subclass, is not),
        so the index costs its full passes nothing; kept as Exposures it cost about 3 µs per
        call."""
        self._wake = asyncio.Event()
        self._pending: list[Pending | Feedback] = []
        self.dropped_exposures = 0
        """Exposures lost: the queue was full, or the store never took them before shutdown."""
        self.orphans = 0
        """Feedback the store ignored because no exposure was stored for its request."""

    # ---- the request path: enqueue only ----------------------------------------------------------

    def call_finished(self, record: CallRecord) -> None:
        """Queue the call's exposure if it was served in an experiment (others are not recorded).

        What is queued is the exposure's fields as a plain tuple, its time still in nanoseconds
        (`Pending`); the `Exposure` is made when its batch is written. The call's record is not
        kept: queued, a record held 1,330 bytes per call, this tuple 450 (the gateway's memory
        while the store was down, benchmarks/README.md), and the collector untracks the tuple
        after one pass, where every full pass walked the queued records. Building it costs the
        call about 0.6 µs more than queuing the record did (2.3 µs in all).
        """
        prompt = record.prompt
        if prompt is None or prompt.experiment_id is None:
            return
        request_id = record.request_id
        user = record.user_hash if prompt.assignment == "user" else None
        pending = (
            request_id,
            prompt.experiment_id,
            "treatment" if prompt.variant == "treatment" else "control",
            prompt.version,
            user or request_id,
            record.start_ns,
            record.duration_s * 1000,
            record.input_tokens,
            record.output_tokens,
            record.cost_usd,
            record.status,
            record.trace_id,
        )
        if not self._put(pending):
            self.dropped_exposures += 1
            return
        self._recent.setdefault(request_id, pending)  # the stores keep a request id's first too

    def feedback(self, feedback: Feedback) -> bool:
        """Queue a feedback value; False when the queue is full (the caller answers 503)."""
        return self._put(feedback)

    def recent(self, request_id: str) -> Exposure | None:
        """An exposure this process queued lately (one of the last RECENT written, or one not
        written yet); None: ask the store."""
        pending = self._recent.get(request_id)
        return None if pending is None else exposure_of(pending)

    def _put(self, item: Pending | Feedback) -> bool:
        if len(self._queue) + len(self._pending) >= self._queue_size:
            return False
        self._queue.append(item)
        if len(self._queue) >= BATCH_SIZE:
            self._wake.set()
        return True

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
                self._forget(self._pending)
                self._forget(self._queue)
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
        self._forget(self._pending)
        self._pending = []

    def _take(self) -> None:
        queue = self._queue
        self._pending = [queue.popleft() for _ in range(min(BATCH_SIZE, len(queue)))]

    async def _write(self) -> None:
        batch = self._pending
        exposures = [exposure_of(i) for i in batch if type(i) is tuple]
        feedback = [i for i in batch if type(i) is Feedback]
        recorded = await self._store.record_outcomes(exposures, feedback)
        self.orphans += recorded.orphans
        self._pending = []
        # The written leave the index from its front (the oldest first), down to the last
        # RECENT written and everything still queued.
        recent = self._recent
        excess = len(recent) - RECENT - len(self._queue)
        if excess > 0:
            for request_id in list(islice(recent, excess)):
                del recent[request_id]

    def _forget(self, items: Iterable[Pending | Feedback]) -> None:
        """Take lost exposures out of the index (feedback for them is then checked against the
        store, which does not have them)."""
        recent = self._recent
        for item in items:
            if type(item) is tuple:
                recent.pop(item[0], None)


def _exposures_in(items: Iterable[Pending | Feedback]) -> int:
    """How many of `items` are exposures (the rest is feedback)."""
    return sum(type(item) is tuple for item in items)


Pending = tuple[
    str, str, str, str, str, int, float, int | None, int | None, float | None, int, str | None
]
"""An exposure as queued: Exposure's fields, its time `at` as nanoseconds since the epoch."""


def exposure_of(pending: Pending) -> Exposure:
    """The Exposure of a queued one (its fields unpacked into `tuple.__new__`: `_make` on a
    concatenation of slices took 0.80 µs, this 0.54)."""
    rid, experiment, variant, version, unit, ns, latency, sent, received, cost, status, trace = (
        pending
    )
    at = datetime.fromtimestamp(ns / 1e9, UTC)
    return _new(
        Exposure,
        (rid, experiment, variant, version, unit, at, latency, sent, received, cost, status, trace),
    )


_new = tuple.__new__
