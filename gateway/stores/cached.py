"""The in-memory snapshot the request path reads: refreshed on change, never awaited per call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.core.model import RegistrySnapshot
from gateway.errors import StoreUnavailable
from gateway.stores.base import PromptReader

log = logging.getLogger("gateway.registry")


class SnapshotCache:
    """Holds the last good snapshot and reloads it whenever the store announces a change.

    `current` is a plain attribute read: serving never waits on the store. While the store is
    unreachable the last good snapshot keeps serving; the outage and the recovery are each logged
    once, and the watcher retries with a capped backoff.

    A snapshot never goes backwards silently (PRODUCT §15): when the store answers with an older
    revision than the one served, or with no prompts where some are served (a Redis restarted
    without its data), the cache keeps what it has, logs an error once and sets `stale`, until
    the store holds newer data again (`gateway store restore` refills it).
    """

    def __init__(self, reader: PromptReader, *, max_backoff: float = 5.0) -> None:
        self._reader = reader
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self.current = RegistrySnapshot()
        self.healthy = False
        self.loaded = False
        """A snapshot was loaded at least once (until then /readyz says 503)."""
        self.stale = False
        """The store holds older data than the snapshot served (gateway_registry_stale)."""
        self._outage_logged = False
        self._stopping = False
        self.listeners: list[Callable[[RegistrySnapshot], None]] = []
        """Called with each snapshot taken into service, on the event loop; quick and pure-ish."""

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
                    self._offer(await self._reader.snapshot())
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

    def _offer(self, snapshot: RegistrySnapshot) -> None:
        """Serve `snapshot`, unless it would take the registry backwards."""
        served = self.current
        emptied = not snapshot.prompts and bool(served.prompts)
        # Older, and missing prompts this gateway serves: a store that lost data. (A store
        # refilled by pushing everything again counts from a lower revision; it is taken.)
        older = _revision(snapshot.revision) < _revision(served.revision) and not (
            served.prompts.keys() <= snapshot.prompts.keys()
        )
        if self.loaded and (older or emptied):
            if not self.stale:
                log.error(
                    "the registry store holds older data (revision %s, %d prompts) than this "
                    "gateway serves (revision %s, %d prompts); still serving what it has. Refill "
                    "the store: gateway store restore FILE, or push and promote again",
                    snapshot.revision or "0",
                    len(snapshot.prompts),
                    served.revision,
                    len(served.prompts),
                )
            self.stale = True
            return
        if self.stale:
            log.info("the registry store holds current data again: revision %s", snapshot.revision)
        self.stale = False
        self.current = snapshot
        self.loaded = True
        for listener in self.listeners:
            listener(snapshot)

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


def _revision(text: str) -> int:
    """A snapshot's revision as a number (stores count writes); 0 when it has none."""
    return int(text) if text.isdigit() else 0
