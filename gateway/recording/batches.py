"""The background loop both recorders share: write a batch every tick, back off while the store
is down, never let a bug end recording.

A subclass says what one tick writes (`write_batch`), what a lost batch counts as (`drop_pending`)
and, if it wakes early, how it waits (`wait`). The loop logs the store's outage once and its
recovery once; each failed tick doubles the delay up to `max_backoff` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

from gateway.errors import StoreUnavailable

log = logging.getLogger("gateway.recording")


class BatchWriter(ABC):
    """Runs `write_batch` every `flush_interval` seconds in a task of the running event loop."""

    what: str
    """What is written, for the log: "experiment outcomes", "captured prompts"."""

    def __init__(self, *, flush_interval: float, max_backoff: float) -> None:
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def write_batch(self) -> None:
        """Write what one tick takes; raises StoreUnavailable to be retried at the next tick."""

    @abstractmethod
    def drop_pending(self) -> None:
        """Forget the batch a bug kept from being written, counting what it held as lost."""

    async def wait(self, seconds: float) -> None:
        """Wait for the next tick (a subclass may wake sooner)."""
        await asyncio.sleep(seconds)

    def start(self) -> None:
        """Start the background writer (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def cancel(self) -> None:
        """Stop the background writer; what is queued stays for a last flush."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self._flush_interval
        down = False
        while True:
            await self.wait(delay)
            try:
                await self.write_batch()
            except StoreUnavailable as exc:
                if not down:
                    log.error("cannot write %s, retrying: %s", self.what, exc.message)
                down = True
                delay = min(delay * 2, self._max_backoff)
                continue
            except Exception:  # a bug must not end recording for the life of the process
                log.exception("writing %s failed; the batch is dropped", self.what)
                self.drop_pending()
                continue
            if down:
                log.info("%s are written again", self.what)
            down = False
            delay = self._flush_interval
