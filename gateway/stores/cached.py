"""The in-memory snapshot the request path reads: refreshed on change, never awaited per call."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.core.model import RegistrySnapshot
from gateway.errors import StoreUnavailable
from gateway.stores.base import PromptReader

log = logging.getLogger("gateway.registry")


class SnapshotCache:
    """Holds the last good snapshot and reloads it whenever the store announces a change.

    `current` is a plain attribute read: serving never waits on the store. While the store is
    unreachable the last good snapshot keeps serving; the outage and the recovery are each logged
    once, and the watcher retries with a capped backoff.
    """

    def __init__(self, reader: PromptReader, *, max_backoff: float = 5.0) -> None:
        self._reader = reader
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self.current = RegistrySnapshot()
        self.healthy = False
        self._outage_logged = False
        self._stopping = False

    async def start(self, *, wait: float = 5.0) -> None:
        """Start watching; return after the first load attempt (or `wait` seconds), ok or not."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="registry-snapshot")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), wait)

    async def stop(self) -> None:
        """Stop watching; the last snapshot stays readable."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # A client library that swallows the cancellation must not hang shutdown: the flag
            # ends the loop at its next turn, and we wait a bounded time for that.
            await asyncio.wait({self._task}, timeout=5)
            self._task = None

    async def _watch(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                async for _ in self._reader.changes():
                    if self._stopping:
                        return
                    self.current = await self._reader.snapshot()
                    self._attempted.set()
                    backoff = 0.1
                    if not self.healthy:
                        self.healthy = True
                        self._outage_logged = False
                        log.info(
                            "registry snapshot loaded: revision %s, %d prompts",
                            self.current.revision,
                            len(self.current.prompts),
                        )
            except Exception as exc:  # StoreUnavailable, or an odd backend error: keep watching
                self._mark_down(exc)
                self._attempted.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _mark_down(self, exc: Exception) -> None:
        # Logged once per outage, not on every retry.
        if not self._outage_logged:
            reason = str(exc) if isinstance(exc, StoreUnavailable) else repr(exc)
            log.warning(
                "registry store unreachable; serving the last good snapshot (revision %s): %s",
                self.current.revision or "none",
                reason,
            )
        self._outage_logged = True
        self.healthy = False
