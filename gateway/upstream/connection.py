"""One HTTP/1.1 connection to a provider: an asyncio protocol that reads answers with httptools.

The gateway's own client (benchmarks/README.md, "The choices": 26-28 µs of CPU per request on a
loopback load where aiohttp's takes 111-115, `benchmarks/bench_upstream.py`). A connection
carries one request at a time (HTTP/1.1 without pipelining):

    connection.start(deadline, read_timeout)   arm the deadline, reset the answer's state
    connection.transport.write(head + body)    or `await connection.write(piece)` for uploads
    connection.sent()                          the request is out: the read timeout runs
    await connection.head()                    status and headers have arrived
    await connection.next_chunk()              body bytes as they come; b"" at the end

Failures are kept, not raised where they happen (a parser callback, a timer, `connection_lost`),
and raised to whoever waits next: `ReadTimeout`, `TotalTimeout` or `Broken`. The body is never
held beyond `HIGH_WATER` bytes: past it the socket stops being read until the relay catches up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, cast

import httptools

from gateway.upstream.base import Headers
from gateway.upstream.routing import Origin

HIGH_WATER: Final = 1 << 16
"""Body bytes kept unread before the socket is paused (aiohttp's default limit is the same)."""

MAX_HEAD: Final = 1 << 16
"""Largest response head accepted (bytes: its lines' names and values together, and the bytes read
while it is unfinished): past it the answer is refused as broken rather than held."""


class ReadTimeout(Exception):
    """The provider sent nothing for `read_timeout` seconds while an answer was awaited."""


class TotalTimeout(Exception):
    """The call passed its deadline (`total_timeout` after it was sent)."""


class Broken(Exception):
    """The connection closed, or the provider sent something that is not HTTP/1.1, before the
    answer ended; the message says which."""


class _Surplus(Exception):
    """Raised from the parser when a second answer begins after the one awaited."""


class Connection(asyncio.Protocol):
    """A provider connection, its parser and the answer in flight (at most one)."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_deadline",
        "_draining",
        "_head",
        "_head_fed",
        "_head_size",
        "_last_read",
        "_loop",
        "_parser",
        "_paused",
        "_read_timeout",
        "_sending",
        "_timer",
        "_waiter",
        "answered",
        "busy",
        "chunked",
        "closed",
        "complete",
        "error",
        "headers",
        "heard",
        "idle_since",
        "key",
        "length",
        "lost_at",
        "on_lost",
        "opened_in",
        "reusable",
        "sent_at",
        "status",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, key: Origin) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.key = key
        """The pool's key: the provider's origin (host, port, TLS)."""
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.on_lost: Callable[[Connection], None] | None = None
        """Called with this connection when it closes while idle in the pool."""
        self.busy = False
        self.lost_at = 0.0
        """Loop time the connection was lost (0 while it is open)."""
        self.opened_in = 0.0
        """Seconds the connection took to open (TCP and TLS handshakes): about a round trip or
        two to the provider, set by the pool."""
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._head: asyncio.Future[None] | None = None
        self._draining: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._read_timeout = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.length: int | None = None
        """The answer's content-length, None when chunked or ended by the connection's close."""
        self.chunked = False
        self.answered = False
        self.heard = False
        """Any byte arrived since the request began (a reused connection that closes before that
        may not have read the request: see `client._repeatable`)."""
        self.complete = False
        self.reusable = True
        self.error: BaseException | None = None
        self.sent_at = 0.0
        """Loop time the request was sent whole (0 while it is being sent)."""
        self._sending = True
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._head_size = 0
        self._head_fed = 0
        self._last_read = 0.0

    # ---- the request side ----------------------------------------------------------------------

    def start(self, deadline: float, read_timeout: float) -> None:
        """Begin a request: a fresh answer, the deadline (loop time) armed. The read timeout
        counts from `sent` (a slow upload is not the provider's silence), as aiohttp's did."""
        self._reset()
        self.busy = True
        self._deadline = deadline
        self._read_timeout = read_timeout
        self._last_read = now = self._loop.time()
        self._timer = self._loop.call_at(min(deadline, now + read_timeout), self._check_time)

    def sent(self) -> None:
        """The request has been handed to the socket whole: the provider's turn."""
        self._sending = False
        self.sent_at = self._last_read = self._loop.time()

    async def write(self, data: bytes) -> None:
        """Write part of a streamed body, waiting while the socket's send buffer is full.
        Raises `Broken` when the connection already failed."""
        if self.error is not None:
            raise self.error
        transport = self.transport
        assert transport is not None
        transport.write(data)
        if self._draining is not None:
            await self._draining
            if self.error is not None:
                raise self.error

    def pause_writing(self) -> None:
        self._draining = self._loop.create_future()

    def resume_writing(self) -> None:
        draining, self._draining = self._draining, None
        if draining is not None and not draining.done():
            draining.set_result(None)

    # ---- the answer side -----------------------------------------------------------------------

    async def head(self) -> None:
        """Wait for the status line and headers; raises the connection's failure."""
        if not self.answered and self.error is None:
            self._head = self._loop.create_future()
            await self._head
        if not self.answered:
            assert self.error is not None
            raise self.error

    async def next_chunk(self) -> bytes:
        """The body bytes received since the last call (joined), b"" once the answer ended."""
        while True:
            if self._buffer:
                buffer = self._buffer
                data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
                self._buffer = []
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            self._last_read = self._loop.time()  # the relay's own pauses are not the provider's
            self._waiter = self._loop.create_future()
            await self._waiter

    @property
    def drained(self) -> bool:
        """The answer ended and every byte of its body was taken by `next_chunk`."""
        return self.complete and not self._buffer

    def finish(self) -> bool:
        """End the request: timers off; True when the connection can carry another one."""
        self.busy = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self.complete and self.reusable and not self.closed and self.error is None

    def close(self) -> None:
        """Drop the connection (the answer is not read to its end, or it is not reusable)."""
        self.closed = True
        self.busy = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()

    def abort(self, error: BaseException) -> None:
        """Fail the request with `error` and cut the connection at once (an upload broke off:
        the provider must not see a complete body)."""
        self._fail(error)

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        self.heard = True
        if self.complete or self.error is not None:
            # Bytes nobody asked for (after the answer, or while idle): the connection's framing
            # can no longer be trusted.
            self.reusable = False
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Broken("it switched protocols"))
        except httptools.HttpParserError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _Surplus):
                self.reusable = False  # a second answer after the first: ignored, not reused
                return
            reason = str(cause) if isinstance(cause, Broken) else f"an invalid answer: {exc}"
            self._fail(Broken(reason))
            return
        if not self.answered:
            # A head still unfinished is counted by the bytes fed (the parser re-reads a partial
            # line on every read, so an endless one would cost time quadratic in its length).
            self._head_fed += len(data)
            if self._head_fed > MAX_HEAD:
                self._fail(Broken(f"its headers passed {MAX_HEAD} bytes"))

    def eof_received(self) -> bool | None:
        return None  # close the transport: HTTP/1.1 has no half-closed connections

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost_at = self._loop.time()
        if self.busy and self.error is None and not self.complete:
            if self.answered and self.length is None and not self.chunked:
                self._complete()  # a body without length or chunks ends with the connection
            else:
                reason = f"the connection closed ({exc})" if exc else "the connection closed"
                self._fail(Broken(reason))
        self.resume_writing()
        if self.on_lost is not None:
            self.on_lost(self)

    # ---- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Surplus  # bytes past the end of the answer are not another answer to it
        self.headers = []
        self.length = None
        self.chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value)
        if self._head_size > MAX_HEAD:
            raise Broken(f"its headers passed {MAX_HEAD} bytes")
        name = name.lower()
        if name == b"content-length":
            self.length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            self.chunked = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # 1xx: an interim answer; the real one follows
        self.status = status
        self.answered = True
        if not self._parser.should_keep_alive():
            self.reusable = False
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._buffer.append(body)
        self._buffered += len(body)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.answered:
            self._complete()

    # ---- endings -------------------------------------------------------------------------------

    def complete_head_only(self) -> None:
        """A HEAD request's answer ends with its headers; its connection is not reused, since
        the parser would wait for the body its content-length announces."""
        self.reusable = False
        self._complete()

    def _complete(self) -> None:
        self.complete = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.reusable = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        for future in (self._head, self._waiter):
            if future is not None and not future.done():
                future.set_result(None)
        self._head = self._waiter = None
        self.resume_writing()

    def _check_time(self) -> None:
        self._timer = None
        if self.complete or self.error is not None:
            return
        now = self._loop.time()
        if now >= self._deadline:
            self._fail(TotalTimeout())
            return
        waiting = (not self.answered and not self._sending) or self._waiter is not None
        due = self._last_read + self._read_timeout
        if waiting and now >= due:
            self._fail(ReadTimeout())
            return
        if not waiting:
            due = now + self._read_timeout
        self._timer = self._loop.call_at(min(self._deadline, due), self._check_time)
