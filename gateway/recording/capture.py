"""Adoption capture: the system prompts of unmanaged calls, counted in memory, written in batches.

`CaptureRecorder.call_finished` (an Observer of finished calls, registered only when
`adoption.capture` is on) adds each system/developer text of an unmanaged call that the provider
answered (status below 400) to an in-memory table keyed by the text itself: a count, first and
last seen, and the call shapes. Nothing is hashed or written on the request path. A background
task swaps the table out every `flush_interval` seconds, fingerprints each text
(`core.capture.fingerprint`) and merges the batch into the store (`record_captures`, which keeps
the `max_candidates` most recently seen).

The table is bounded by `queue_size` distinct texts: a text that would be one more is dropped and
counted (`gateway_adoption_dropped_total`). While the store is down, the batch being written is
kept and retried; new sightings keep counting up to the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.core.capture import CallShape, CapturedPrompt, fingerprint, merge
from gateway.errors import StoreUnavailable
from gateway.stores.base import CaptureStore
from gateway.telemetry.events import CallRecord

log = logging.getLogger("gateway.recording")

MAX_BACKOFF = 30.0


@dataclass(slots=True)
class _Seen:
    """One text's sightings since the last batch (times in Unix nanoseconds)."""

    role: str
    first: int
    last: int
    count: int = 0
    shapes: dict[CallShape, int] = field(default_factory=dict)


class CaptureRecorder:
    """Counts system prompts of unmanaged calls; a background task writes them in batches."""

    def __init__(
        self, store: CaptureStore, *, limit: int, queue_size: int, flush_interval: float
    ) -> None:
        self._store = store
        self._limit = limit
        self._queue_size = queue_size
        self._flush_interval = flush_interval
        self._seen: dict[str, _Seen] = {}
        self._pending: list[CapturedPrompt] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Sightings lost: the table was full, or the store never took them before shutdown."""

    # ---- the request path: count only ------------------------------------------------------------

    def call_finished(self, record: CallRecord) -> None:
        """Count the system texts of an unmanaged call the provider answered."""
        texts = record.system_texts
        if not texts or record.prompt is not None or record.status >= 400:
            return
        shape = CallShape(record.request_model, record.temperature, record.max_tokens)
        seen = self._seen
        at = record.start_ns
        for role, text in texts:
            entry = seen.get(text)
            if entry is None:
                if len(seen) >= self._queue_size:
                    self.dropped += 1
                    continue
                entry = seen[text] = _Seen(role, at, at)
            entry.count += 1
            entry.last = max(entry.last, at)
            entry.shapes[shape] = entry.shapes.get(shape, 0) + 1

    # ---- the writer ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Write what is counted (one try), then stop; what the store refuses is counted lost."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except StoreUnavailable as exc:
            lost = sum(p.count for p in self._pending)
            self.dropped += lost
            self._pending = []
            log.error("stopping with %d captured sightings unwritten: %s", lost, exc.message)

    async def flush(self) -> None:
        """Write everything counted now (tests and shutdown); raises StoreUnavailable."""
        self._take()
        if self._pending:
            await self._store.record_captures(self._pending, limit=self._limit)
            self._pending = []

    async def _run(self) -> None:
        delay = self._flush_interval
        down = False
        while True:
            await asyncio.sleep(delay)
            try:
                await self.flush()
            except StoreUnavailable as exc:
                if not down:
                    log.error("cannot write captured prompts, retrying: %s", exc.message)
                down = True
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            except Exception:  # a bug must not end capture for the life of the process
                log.exception("writing captured prompts failed; the batch is dropped")
                self.dropped += sum(p.count for p in self._pending)
                self._pending = []
                continue
            if down:
                log.info("captured prompts are written again")
            down = False
            delay = self._flush_interval

    def _take(self) -> None:
        """Move the counted texts into the pending batch (merged by fingerprint)."""
        seen, self._seen = self._seen, {}
        if not seen:
            return
        batch = {p.fingerprint: p for p in self._pending}
        for text, entry in seen.items():
            first = datetime.fromtimestamp(entry.first / 1e9, UTC)
            last = datetime.fromtimestamp(entry.last / 1e9, UTC)
            found = CapturedPrompt(
                fingerprint(text), entry.role, text, entry.count, first, last, entry.shapes
            )
            batch[found.fingerprint] = merge(batch.get(found.fingerprint), found)
        self._pending = list(batch.values())
