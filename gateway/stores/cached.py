"""The in-memory snapshot the request path reads: refreshed on change, never awaited per call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.core.model import RegistrySnapshot
from gateway.errors import GatewayError, StoreUnavailable
from gateway.stores.backup import dump_snapshot, load_snapshot, write_atomically
from gateway.stores.base import PromptReader

log = logging.getLogger("gateway.registry")


class SnapshotFile:
    """The last good snapshot on local disk (PRODUCT §15), for a process that starts while its
    store is down.

    The file names the store it was read from (`source`, a store's `location`); a file of another
    store is never served. Reading and writing block (use a worker thread); neither raises: a
    missing, unreadable, corrupt or foreign file is logged and read as None, a failed write is
    logged and the old file stays.
    """

    def __init__(self, path: str | Path, *, source: str) -> None:
        self.path = Path(path)
        self.source = source

    def read(self) -> RegistrySnapshot | None:
        """The snapshot in the file, or None (logged unless the file does not exist)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("snapshot file %s cannot be read (%s); ignored", self.path, exc)
            return None
        try:
            snapshot, source = load_snapshot(raw, where=str(self.path))
        except GatewayError as exc:
            log.warning("snapshot file ignored: %s", exc.message)
            return None
        if source != self.source:
            log.warning(
                "snapshot file %s was read from another store (%s, not %s); ignored",
                self.path,
                source,
                self.source,
            )
            return None
        return snapshot

    def write(self, snapshot: RegistrySnapshot) -> bool:
        """Replace the file with `snapshot` atomically; False (logged) when that failed."""
        try:
            write_atomically(self.path, dump_snapshot(snapshot, source=self.source))
        except OSError as exc:
            log.warning("snapshot file %s cannot be written (%s)", self.path, exc)
            return False
        return True


class SnapshotCache:
    """Holds the last good snapshot and reloads it whenever the store announces a change.

    `current` is a plain attribute read: serving never waits on the store. While the store is
    unreachable the last good snapshot keeps serving; the outage and the recovery are each logged
    once, and the watcher retries with a capped backoff.

    A snapshot never goes backwards silently (PRODUCT §15): when the store answers with an older
    revision than the one served, or with no prompts where some are served (a Redis restarted
    without its data), the cache keeps what it has, logs an error once and sets `stale`, until
    the store holds newer data again (`gateway store restore` refills it).

    With a `disk` file, every snapshot taken from the store at a new revision is written there by
    the watcher (in a worker thread, never on the request path). A process starts from the file's
    snapshot (`from_disk`) and offers the store's first answer against it under the same rule:
    a store come back empty or older while no gateway ran is not taken either.

    `max_backoff` caps the wait between attempts while the store is down: a store that comes
    back is read again within that (plus the client's connect time), so keep it well under the
    second that a change may take to reach the gateway.
    """

    def __init__(
        self,
        reader: PromptReader,
        *,
        max_backoff: float = 0.25,
        disk: SnapshotFile | None = None,
    ) -> None:
        self._reader = reader
        self._max_backoff = max_backoff
        self._disk = disk
        self._written = ("", "")
        """(lineage, revision) of the snapshot in the disk file."""
        self._file_logged = False
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self.current = RegistrySnapshot()
        self.healthy = False
        self.loaded = False
        """A snapshot was loaded at least once (until then /readyz says 503)."""
        self.stale = False
        """The store holds older data than the snapshot served (gateway_registry_stale)."""
        self.from_disk = False
        """The snapshot served came from the disk file, not (yet) from the store."""
        self._outage_logged = False
        self._stopping = False
        self.listeners: list[Callable[[RegistrySnapshot], None]] = []
        """Called with each snapshot taken into service, on the event loop; quick and pure-ish."""

    async def start(self, *, wait: float = 5.0) -> None:
        """Start watching; return after the first load attempt (or `wait` seconds), ok or not.

        The disk file, if any, is read first (in a worker thread), kept for a failed first load.
        """
        if self._disk is not None and self._task is None:
            kept = await asyncio.to_thread(self._disk.read)
            if kept is not None:
                # The file is where this process starts from: the store's first answer is
                # offered against it, so a store come back empty or older while no process was
                # running is not taken either (and the file is never overwritten by it).
                self._written = (kept.lineage, kept.revision)
                self._serve(kept)
                self.from_disk = True
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
                    await self._save()
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
        """Serve `snapshot`, unless it would take the registry backwards: the same store (same
        lineage, or one without any) at a lower revision, or no prompts where some are served.
        A store of another lineage (emptied and filled again, or restored) is taken, and logged."""
        served = self.current
        same_life = not snapshot.lineage or not served.lineage or snapshot.lineage == served.lineage
        older = same_life and _revision(snapshot.revision) < _revision(served.revision)
        emptied = not snapshot.prompts and bool(served.prompts)
        if self.loaded and (older or emptied):
            if not self.stale:
                log.error(
                    "the registry store holds older data (revision %s, %d prompts) than this "
                    "gateway serves (revision %s, %d prompts); still serving what it has "
                    "(gateway_registry_stale 1). Refill the store: gateway store restore FILE, "
                    "or push and promote again",
                    snapshot.revision or "0",
                    len(snapshot.prompts),
                    served.revision,
                    len(served.prompts),
                )
            self.stale = True
            return
        if self.loaded and not same_life:
            log.warning(
                "the registry store was replaced (emptied and filled again, or restored): "
                "serving its revision %s (%d prompts) instead of revision %s (%d prompts)",
                snapshot.revision or "0",
                len(snapshot.prompts),
                served.revision,
                len(served.prompts),
            )
        elif self.stale:
            log.info("the registry store holds current data again: revision %s", snapshot.revision)
        self.stale = False
        self._serve(snapshot)
        self.from_disk = False

    def _serve(self, snapshot: RegistrySnapshot) -> None:
        self.current = snapshot
        self.loaded = True
        for listener in self.listeners:
            listener(snapshot)

    async def _save(self) -> None:
        """Write the snapshot served to the disk file when it came from the store at a revision
        the file does not hold yet (one the cache took: never an older one it refused)."""
        snapshot = self.current
        if self._disk is None or self.from_disk or not self.loaded:
            return
        written = (snapshot.lineage, snapshot.revision)
        if written == self._written:
            return
        if await asyncio.to_thread(self._disk.write, snapshot):
            self._written = written

    def _mark_down(self, exc: Exception) -> None:
        if self.from_disk and self._disk is not None and not self._file_logged:
            self._file_logged = True
            log.warning(
                "serving the snapshot file %s (revision %s, %d prompts) until the store answers",
                self._disk.path,
                self.current.revision,
                len(self.current.prompts),
            )
        # Logged once per outage, not on every retry.
        if not self._outage_logged:
            reason = str(exc) if isinstance(exc, StoreUnavailable) else repr(exc)
            if self.loaded:
                log.warning(
                    "registry store unreachable; serving the last good snapshot (revision %s): %s",
                    self.current.revision or "0",
                    reason,
                )
            else:
                log.warning("registry store unreachable, no registry loaded yet: %s", reason)
        self._outage_logged = True
        self.healthy = False


def _revision(text: str) -> int:
    """A snapshot's revision as a number (stores count writes); 0 when it has none."""
    return int(text) if text.isdigit() else 0
