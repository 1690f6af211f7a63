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

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.core.capture import CallShape, CapturedPrompt, fingerprint, merge
from gateway.errors import StoreUnavailable
from gateway.recording.batches import BatchWriter
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


class CaptureRecorder(BatchWriter):
    """Counts system prompts of unmanaged calls; a background task writes them in batches."""

    what = "captured prompts"

    def __init__(
        self, store: CaptureStore, *, limit: int, queue_size: int, flush_interval: float
    ) -> None:
        super().__init__(flush_interval=flush_interval, max_backoff=MAX_BACKOFF)
        self._store = store
        self._limit = limit
        self._queue_size = queue_size
        self._seen: dict[str, _Seen] = {}
        self._pending: list[CapturedPrompt] = []
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

    async def stop(self) -> None:
        """Write what is counted (one try), then stop; what the store refuses is counted lost."""
        await self.cancel()
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

    async def write_batch(self) -> None:
        await self.flush()

    def drop_pending(self) -> None:
        self.dropped += sum(p.count for p in self._pending)
        self._pending = []

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
