"""Open connections to providers, kept for reuse: at most `limit` per process, over all providers.

A request takes the most recently used idle connection to its provider's origin, else opens one;
past the limit it closes an idle connection to another origin, else queues for one (first come,
first served, until the call's own deadline: `Exhausted` then). Idle connections are closed after
`KEEPALIVE` seconds, and forgotten as soon as the provider closes them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Final, NamedTuple

from gateway.upstream.connection import Connection
from gateway.upstream.routing import Origin, Provider

KEEPALIVE: Final = 30.0
"""Seconds an idle connection is kept (aiohttp's default, which the gateway used before)."""


class Exhausted(Exception):
    """Every connection the pool may open stayed busy until the call's deadline."""


class _Waiter(NamedTuple):
    """A call queued for a connection: handed a connection to its origin, or a slot (None) to
    open one in."""

    origin: Origin
    fresh: bool
    future: asyncio.Future[Connection | None]


class Pool:
    """Connections by origin; `acquire` a connection for a request, `release` it after.

    Calls past the limit queue, first come first served: a released connection goes to the
    first call waiting for its origin at the head of the queue, or is closed so that call can
    open its own; a call that finds others queued waits behind them even if a connection is
    idle at that moment.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._idle: dict[Origin, list[Connection]] = {}
        self._open = 0
        """Connections open, or being opened in a slot given to a call."""
        self._waiters: deque[_Waiter] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def acquire(
        self, provider: Provider, connect_timeout: float, deadline: float, *, fresh: bool = False
    ) -> tuple[Connection, bool]:
        """A connection to the provider and whether it was reused (never, when `fresh`). Raises
        OSError when none can be opened, TimeoutError when opening one takes longer than
        `connect_timeout`, and Exhausted when no slot comes free before `deadline` (loop time)."""
        origin = provider.origin
        waiters = self._waiters
        while waiters and waiters[0].future.done():  # calls that stopped waiting
            waiters.popleft()
        if not waiters:
            idle = None if fresh else self._idle.get(origin)
            if idle:
                connection = self._reuse(idle)
                if connection is not None:
                    return connection, True
            if self._open < self._limit or self._close_one_idle():
                self._open += 1
                return await self._connect(provider, origin, connect_timeout), False
        future: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(origin, fresh, future))
        try:
            async with asyncio.timeout_at(deadline):
                given = await future
        except BaseException as exc:
            if future.done() and not future.cancelled():  # given at the moment it stopped
                handed = future.result()
                if handed is not None:
                    self.release(handed, True)
                else:
                    self._free_slot()
            future.cancel()
            if isinstance(exc, TimeoutError):
                raise Exhausted from None
            raise
        if given is not None:
            return given, True
        return await self._connect(provider, origin, connect_timeout), False

    async def _connect(
        self, provider: Provider, origin: Origin, connect_timeout: float
    ) -> Connection:
        """Open a connection in a slot already counted in `_open`."""
        loop = asyncio.get_running_loop()
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
            self._free_slot()
            raise
        connection.opened_in = loop.time() - opening
        return connection

    def release(self, connection: Connection, reuse: bool) -> None:
        """Give a connection back: to the first call queued, else kept idle when `reuse` (its
        answer read to the end); closed otherwise."""
        if not reuse or self._closed or connection.closed:
            connection.close()
            self._free_slot()
            return
        waiter = self._next_waiter()
        if waiter is not None:
            if waiter.origin == connection.key and not waiter.fresh:
                waiter.future.set_result(connection)
            else:  # its slot, for the waiter's own connection
                connection.close()
                waiter.future.set_result(None)
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        connection.on_lost = self._lost
        self._idle.setdefault(connection.key, []).append(connection)
        if self._sweep is None:
            self._sweep = loop.call_at(connection.idle_since + KEEPALIVE, self._close_expired)

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
        self._free_slot()

    def _free_slot(self) -> None:
        """A connection is gone (or was never opened): its slot goes to the first call queued."""
        waiter = self._next_waiter()
        if waiter is None:
            self._open -= 1
        else:
            waiter.future.set_result(None)

    def _next_waiter(self) -> _Waiter | None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                return waiter
        return None

    def _lost(self, connection: Connection) -> None:
        """An idle connection the provider closed."""
        idle = self._idle.get(connection.key)
        if idle is not None and connection in idle:
            idle.remove(connection)
            self._drop(connection)

    def _close_one_idle(self) -> bool:
        """Make room past the limit: close the longest idle connection of any origin."""
        oldest: list[Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is None:
            return False
        connection = oldest.pop(0)
        connection.on_lost = None
        connection.close()
        self._open -= 1  # the caller's slot, taken at once
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

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls
