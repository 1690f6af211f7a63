"""Open connections to providers, kept for reuse: at most `limit` per process, over all providers.

A request takes the most recently used idle connection to its provider's origin, else opens one;
past the limit it closes an idle connection to another origin, else waits for one to be released
(until the call's own deadline: `Exhausted` then). Idle connections are closed after `KEEPALIVE`
seconds, and forgotten as soon as the provider closes them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Final

from gateway.upstream.connection import Connection, Origin
from gateway.upstream.routing import Provider

KEEPALIVE: Final = 30.0
"""Seconds an idle connection is kept (aiohttp's default, which the gateway used before)."""


class Exhausted(Exception):
    """Every connection the pool may open stayed busy until the call's deadline."""


class Pool:
    """Connections by origin; `acquire` a connection for a request, `release` it after."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._idle: dict[Origin, list[Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def acquire(
        self, provider: Provider, connect_timeout: float, deadline: float, *, fresh: bool = False
    ) -> tuple[Connection, bool]:
        """A connection to the provider and whether it was reused (never, when `fresh`). Raises
        OSError when none can be opened, TimeoutError when opening one takes longer than
        `connect_timeout`, and Exhausted when no slot comes free before `deadline` (loop time)."""
        origin = (provider.address, provider.port or 0, provider.tls)
        idle = None if fresh else self._idle.get(origin)
        if idle:
            connection = self._reuse(idle)
            if connection is not None:
                return connection, True
        loop = asyncio.get_running_loop()
        while self._open >= self._limit and not self._close_one_idle():
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken and stopped at once: the turn passes on
                waiter.cancel()
                if isinstance(exc, TimeoutError):
                    raise Exhausted from None
                raise
            idle = None if fresh else self._idle.get(origin)
            if idle:
                connection = self._reuse(idle)
                if connection is not None:
                    return connection, True
        self._open += 1
        opening = loop.time()
        try:
            tls = self._context() if provider.tls else None
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, origin),
                    origin[0],
                    origin[1],
                    ssl=tls,
                    server_hostname=provider.address if tls else None,
                )
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        connection.opened_in = loop.time() - opening
        return connection, False

    def release(self, connection: Connection, reuse: bool) -> None:
        """Give a connection back: kept idle when `reuse` (its answer read to the end), else
        closed."""
        if reuse and not self._closed and not connection.closed:
            loop = asyncio.get_running_loop()
            connection.idle_since = loop.time()
            connection.on_lost = self._lost
            self._idle.setdefault(connection.key, []).append(connection)
            if self._sweep is None:
                self._sweep = loop.call_at(connection.idle_since + KEEPALIVE, self._close_expired)
        else:
            connection.close()
            self._open -= 1
        self._wake()

    def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                self._drop(connection)
        self._idle.clear()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _reuse(self, idle: list[Connection]) -> Connection | None:
        expired = asyncio.get_running_loop().time() - KEEPALIVE
        while idle:
            connection = idle.pop()
            connection.on_lost = None
            if connection.closed or not connection.reusable or connection.idle_since < expired:
                self._drop(connection)
                continue
            return connection
        return None

    def _drop(self, connection: Connection) -> None:
        connection.on_lost = None
        connection.close()
        self._open -= 1

    def _lost(self, connection: Connection) -> None:
        """An idle connection the provider closed."""
        idle = self._idle.get(connection.key)
        if idle is not None and connection in idle:
            idle.remove(connection)
            self._drop(connection)
            self._wake()

    def _close_one_idle(self) -> bool:
        """Make room past the limit: close the longest idle connection of any origin."""
        oldest: list[Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is None:
            return False
        self._drop(oldest.pop(0))
        return True

    def _close_expired(self) -> None:
        """Close the connections idle for KEEPALIVE seconds; come back when the next one is."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        expired = loop.time() - KEEPALIVE
        oldest = None
        for idle in self._idle.values():
            while idle and idle[0].idle_since <= expired:
                self._drop(idle.pop(0))
            if idle and (oldest is None or idle[0].idle_since < oldest):
                oldest = idle[0].idle_since
        if oldest is not None:
            self._sweep = loop.call_at(oldest + KEEPALIVE, self._close_expired)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls
