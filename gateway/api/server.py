"""The HTTP/1.1 server of `gateway serve`: uvicorn's httptools protocol, hardened for bad clients.

uvicorn holds a connection for as long as its client takes to send a request head, accepts heads
of any size and number of fields, and accepts connections until the process runs out of file
descriptors, after which nobody gets in. `GatewayProtocol` adds, per connection:

- a head deadline: from the connection's start (or a request's first byte on a kept-alive
  connection) to the end of its head, at most `ServerLimits.header_timeout` seconds; then
  408 request_timeout and the connection is closed;
- a body deadline: from the end of the head, and between two pieces of its body, at most
  `ServerLimits.body_timeout` seconds while the gateway is reading (time the app leaves the
  body unread is not the client's); then 408 request_timeout and the connection is closed;
- head limits: at most `max_header_bytes` (request line and fields) and `max_headers` fields,
  counted as the bytes arrive; then 431 request_header_fields_too_large, and nothing reaches
  the app;
- a connection limit per worker: past `max_connections`, the connection that has waited longest
  without a request in progress (a slow client, or an idle kept-alive one) is closed to make room;
  else the connection whose request body has stalled longest (more than STALL_GRACE seconds);
  with none, the newcomer gets 503 too_many_connections.

Every refusal is an OpenAI-shaped JSON error with `connection: close`, as is the 400 invalid_http
for bytes that are not HTTP/1.1 (uvicorn answers that one in plain text, and not at all once the
head is complete: a broken chunked body went unanswered). A refusal that comes while the app is
reading the body is answered here too (no response has started); the app sees a disconnect and
finds the error under `scope[REFUSAL]`, so the call is recorded with it, not as a client hang-up.
The request path pays one timer per connection, two clock reads and a few integer additions.

Run as `python -m gateway.api.server --host H --port P --workers N` (what `gateway serve` execs):
it raises the soft file-descriptor limit to the hard one, reads the settings the way the app
factory does, and runs uvicorn with uvloop, this protocol and the app factory.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import resource
import sys
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from gateway.api.disconnect import EXTENSION, Disconnect, disconnect_of
from gateway.errors import (
    GatewayError,
    HeaderFieldsTooLarge,
    MalformedRequest,
    RequestTimeout,
    TooManyConnections,
)
from gateway.settings import Settings, load

log = logging.getLogger("gateway.server")

AUTO_CONNECTIONS_CAP = 16_384
"""The most connections per worker that `max_connections: auto` allows, whatever the fd limit."""
RESERVED_FDS = 32
"""Descriptors kept for everything but clients and provider sockets: the listening socket, the
store, log files, the tracing exporter, imported modules' files."""

STALL_GRACE = 1.0
"""Seconds a request body may make no progress before the connection limit may close it."""
REFUSAL = "gateway.refusal"
"""Scope key under which the app finds the GatewayError that the server answered for it."""

LINGER_SECONDS = 1.0
"""How long a connection answered 400 or 431 waits for its client to read the answer and close."""

refusals: Counter[str] = Counter()
"""Connections answered or closed by the server itself in this process, by error code (and
`evicted_idle` for idle connections closed to make room); read by /metrics."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one worker allows its clients; built from ServerSettings by `limits_for`."""

    header_timeout: float = 10.0
    """Seconds from a connection's start, or a request's first byte, to the end of its head."""
    max_header_bytes: int = 32 * 1024
    """Bytes of the request line and header fields together, separators included."""
    max_headers: int = 100
    """Header fields in one request."""
    body_timeout: float = 30.0
    """Seconds from the end of a head to its body's first piece, and between two pieces."""
    max_connections: int = 1000
    """Open client connections per worker."""


def auto_max_connections(fd_limit: int, pool_size: int) -> int:
    """Client connections one worker can hold when its descriptors are limited to `fd_limit`.

    Leaves room for the provider pool (`pool_size`, at most a quarter of the limit) and
    RESERVED_FDS more; at least 16, at most AUTO_CONNECTIONS_CAP.
    """
    spare = fd_limit - RESERVED_FDS - min(pool_size, fd_limit // 4)
    return max(16, min(spare, AUTO_CONNECTIONS_CAP))


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit now.

    Child processes (uvicorn's workers) inherit it. A hard limit of `unlimited` is taken as
    1,048,576, the kernel's usual `nr_open`; when the raise is refused the limit stays as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def limits_for(settings: Settings, fd_limit: int) -> ServerLimits:
    """The worker limits of these settings; `max_connections: auto` is sized from `fd_limit`."""
    server = settings.server
    connections = server.max_connections
    if connections is None:
        connections = auto_max_connections(fd_limit, settings.upstream.pool_size)
    return ServerLimits(
        header_timeout=server.header_timeout,
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
        body_timeout=server.body_timeout,
        max_connections=connections,
    )


class _Waiting:
    """A worker's connections with no request in progress, oldest first (dicts keep order)."""

    __slots__ = ("order",)

    def __init__(self) -> None:
        self.order: dict[GatewayProtocol, None] = {}


_waiting: weakref.WeakKeyDictionary[ServerState, _Waiting] = weakref.WeakKeyDictionary()


class _LogThrottle:
    """At most one log line per second for each kind of refusal; the next line counts the ones
    left out (a flood of slow clients must not become a flood of log lines)."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.skipped: Counter[str] = Counter()

    def warn(self, code: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last.get(code, -2.0) < 1.0:
            self.skipped[code] += 1
            return
        self.last[code] = now
        skipped = self.skipped.pop(code, 0)
        suffix = f" (and {skipped} more since the last line about {code})" if skipped else ""
        log.warning(message + suffix, *args)


_throttle = _LogThrottle()


class _Flow(FlowControl):
    """uvicorn's flow control, noting when reading resumes: until then the app, not the client,
    held up the body (a full buffer, or a pipelined request waiting its turn)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(transport)
        self._loop = loop
        self.resumed = 0.0

    def resume_reading(self) -> None:
        if self.read_paused:  # called on every receive(); only a real resume costs more
            self.read_paused = False
            self._transport.resume_reading()
            self.resumed = self._loop.time()


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a head deadline, head limits and a connection limit.

    uvicorn builds one per connection with `config`, `server_state` and `app_state`; `limits`
    comes first, bound with functools.partial (see `protocol_factory`).
    """

    def __init__(
        self,
        limits: ServerLimits,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        waiting = _waiting.get(server_state)
        if waiting is None:
            waiting = _waiting[server_state] = _Waiting()
        self._waiting = waiting.order
        # One timer per connection, not per request: it is armed when the connection starts
        # and when a head begins with no timer pending, and never cancelled on the request path;
        # when it fires it acts on the head or body being read then, or lets itself lapse.
        self._head_timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0  # loop time the pending timer fires
        self._head_started = 0.0  # loop time the head being read (or awaited) started
        self._max_header_bytes = limits.max_header_bytes  # read on every header field
        self._head_bytes = 0  # request line and completed fields of the head being read
        self._head_unparsed = 0  # bytes of whole chunks that left the head still unfinished
        self._head_fed = 0  # bytes of every chunk since the head began: at least its size
        self._exact = False  # the head's bytes are counted field by field
        self._messages = 0  # heads begun on this connection
        self._in_head = False
        self._in_body = False  # a head is complete and its body is not
        self._body_last = 0.0  # loop time of the end of the head or the body's latest piece
        self._refusal: GatewayError | None = None
        self._answered = False  # an error was sent; what the client still sends is dropped

    # Connection lifecycle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _Flow(transport, self.loop)
        self._head_started = self.loop.time()
        self._arm(self.limits.header_timeout)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()
        self._waiting[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            disconnect = disconnect_of(cycle.scope)
            if disconnect is not None:
                disconnect.lose()

    def _make_room(self) -> None:
        """Close the connection idle longest (no request in progress), else the one whose body
        has stalled longest, else refuse this one."""
        victim = next(iter(self._waiting), None)
        if victim is None:
            stalled = self._most_stalled()
            if stalled is not None:
                stalled._refuse(
                    TooManyConnections(
                        f"The gateway holds its limit of {self.limits.max_connections} "
                        "connections per worker and closed this one, whose request body had "
                        f"sent nothing for more than {STALL_GRACE:g} s; send the body at once."
                    )
                )
                return
            self._refusal = TooManyConnections(
                f"The gateway holds its limit of {self.limits.max_connections} connections per "
                "worker, each with a request in progress; retry shortly "
                "(server.max_connections, GATEWAY_MAX_CONNECTIONS)."
            )
            return
        del self._waiting[victim]
        if victim._answered:
            victim.transport.close()  # answered already, waiting for its client to read it
        elif victim._refusal is not None:
            victim._refuse(victim._refusal)  # itself refused on arrival, and still silent
        elif victim._in_head:
            victim._refuse(
                TooManyConnections(
                    f"The gateway holds its limit of {self.limits.max_connections} connections "
                    "per worker and closed this one, whose request head was still arriving; "
                    "send the whole head at once."
                )
            )
        else:
            refusals["evicted_idle"] += 1
            victim.transport.close()

    def _most_stalled(self) -> GatewayProtocol | None:
        """The connection whose body the gateway reads and its client has not sent for longest,
        if longer than STALL_GRACE. A scan of every connection, only when the worker is full."""
        oldest = self.loop.time() - STALL_GRACE
        found = None
        for other in self.connections:
            if (
                isinstance(other, GatewayProtocol)
                and other._in_body
                and not other._answered
                and not other.flow.read_paused
                and other._body_since() < oldest
                and not (other.cycle is not None and other.cycle.response_started)
            ):
                found, oldest = other, other._body_since()
        return found

    def _body_since(self) -> float:
        """When the body last progressed, or reading last resumed after the app held it up."""
        flow = self.flow
        resumed = flow.resumed if isinstance(flow, _Flow) else 0.0
        return max(self._body_last, resumed)

    # Reading

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._answered:
            return
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        messages, in_head, size = self._messages, self._in_head, len(data)
        # Heads are counted byte by byte only when they could pass the limit: when the bytes
        # fed since the head began (an upper bound of its size) exceed it. An ordinary request
        # arrives in one chunk far smaller, and its fields then cost no counting at all.
        if not in_head:
            self._exact = size > self._max_header_bytes
        elif not self._exact and self._head_fed + size > self._max_header_bytes:
            self._exact = True
            self._head_bytes = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            self._refuse(
                self._refusal
                or MalformedRequest(
                    f"The request is not valid HTTP/1.1 ({exc}); nothing was forwarded."
                ),
                linger=True,
            )
            return
        if self._in_body and self._timer_due > self._body_last + self.limits.body_timeout:
            # A body is left to come, and the timer, armed for its head, fires after the body's
            # deadline (body_timeout under header_timeout): bring it forward, once per request.
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._arm(self.limits.body_timeout)
        if not self._in_head:
            return
        if in_head and messages == self._messages:
            # The whole chunk belongs to a head that is still unfinished. httptools keeps a
            # field's bytes until the field ends, so count them here too: a field that never
            # ends would otherwise grow without bound.
            self._head_fed += size
            self._head_unparsed += size
            if self._head_unparsed > self._max_header_bytes:
                self._refuse(self._too_large("bytes"), linger=True)
        else:
            self._head_fed = size  # the head began in this chunk

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {EXTENSION: {"state": Disconnect()}}
        if self._messages:  # the first head's time runs from the connection's start
            self._head_started = self.loop.time()
        self._messages += 1
        self._in_head = True
        self._head_bytes = self._head_unparsed = 0
        if self._head_timer is None:
            self._arm(self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if self._exact:
            self._head_bytes += len(url)
            if self._head_bytes > self._max_header_bytes:
                self._refusal = self._too_large("bytes")
                raise self._refusal  # the parser stops; data_received answers it

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, inlined, with the byte count when it is needed: this runs for
        # every field of every request. Fields are counted once, when the head is complete.
        if self._exact:
            self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
            if self._head_bytes > self._max_header_bytes:
                self._refusal = self._too_large("bytes")
                raise self._refusal
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False  # the head timer, when it fires, lets itself lapse
        if len(self.headers) > self.limits.max_headers:
            # At most max_header_bytes / 4 fields were held to get here ("a:" CRLF each).
            self._refusal = self._too_large("fields")
            raise self._refusal
        self._waiting.pop(self, None)
        self._in_body = True  # until on_message_complete, at once for a request without one
        self._body_last = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        # uvicorn's on_body, inlined, with the time of the piece: runs for every piece.
        self._body_last = self.loop.time()
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._in_body = False
        cycle = self.cycle  # uvicorn's on_message_complete, inlined
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.message_event.set()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing():
            self._waiting[self] = None  # idle until the next request: first to go when full

    # Refusing

    def _too_large(self, what: str) -> HeaderFieldsTooLarge:
        if what == "fields":
            limit = f"more than {self.limits.max_headers} header fields (server.max_headers)"
        else:
            limit = (
                f"more than {self.limits.max_header_bytes} bytes of request line and header "
                "fields (server.max_header_bytes)"
            )
        return HeaderFieldsTooLarge(
            f"The request head has {limit}; nothing was forwarded. Send less in headers."
        )

    def _arm(self, delay: float) -> None:
        """Set the connection's timer to fire `delay` seconds from now."""
        self._timer_due = self.loop.time() + delay
        self._head_timer = self.loop.call_later(delay, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._messages and not self._in_head:
            if self._in_body:
                self._body_deadline()
            return  # no head or body being read: a request under way, or idle (keep-alive)
        remaining = self._head_started + self.limits.header_timeout - self.loop.time()
        if remaining > 0:  # armed for an earlier head; this one started later
            self._arm(remaining)
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a response still being sent: answering now would cut
            # into that response, so the head gets another period.
            self._arm(self.limits.header_timeout)
            return
        self._refuse(
            self._refusal
            or RequestTimeout(
                f"The request head did not arrive within {self.limits.header_timeout:g} s "
                "(server.header_timeout); send the whole head at once."
            )
        )

    def _body_deadline(self) -> None:
        """The timer fired while a body is read: 408 if it has stalled for body_timeout."""
        now = self.loop.time()
        if self.flow.read_paused:
            self._body_last = now  # the app holds the body up, not the client
        remaining = self._body_since() + self.limits.body_timeout - now
        cycle = self.cycle
        if remaining <= 0 and cycle is not None and cycle.response_started:
            if cycle.response_complete:
                self.transport.close()  # answered already; the rest of the body is not coming
                return
            remaining = self.limits.body_timeout  # an answer is under way: do not cut into it
        if remaining > 0:
            self._arm(remaining)
            return
        self._refuse(
            RequestTimeout(
                f"The request body sent nothing for {self.limits.body_timeout:g} s "
                "(server.body_timeout); send the whole body at once."
            )
        )

    def _refuse(self, error: GatewayError, *, linger: bool = False) -> None:
        """Answer `error` as OpenAI's JSON with `connection: close`, and close.

        With `linger` (the client sent more than it may), and while the worker is below its
        connection limit, only the sending side is shut and the connection closes when the
        client does or LINGER_SECONDS later: closing a socket with unread bytes resets it, and a
        reset can destroy the answer before the client reads it (nginx's lingering close).
        """
        if self._answered or self.transport.is_closing():
            return
        self._answered = True
        refusals[error.code] += 1
        _throttle.warn(
            error.code,
            "%d %s from %s: %s",
            error.status,
            error.code,
            f"{self.client[0]}:{self.client[1]}" if self.client else "?",
            error.message,
        )
        cycle = self.cycle
        if cycle is not None and (self._in_body or not cycle.response_complete):
            if cycle.response_started or self.pipeline or not self._in_body:
                # A response is under way, or done, or another request's: none can follow it.
                self.transport.close()
                return
            # This request's body is being read and nothing is answered: answer it here. The
            # app sees a disconnect, its own answer is dropped, and it finds why in its scope.
            cast(dict[str, Any], cycle.scope)[REFUSAL] = error
            cycle.disconnected = True
            cycle.message_event.set()
        body = orjson.dumps(error.to_openai())
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        if (
            linger
            and len(self.connections) < self.limits.max_connections
            and self.transport.can_write_eof()
        ):
            self.transport.write_eof()
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
            self._waiting.setdefault(self, None)  # closed first if the worker is full
        else:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's plain-text 400, as JSON."""
        self._refuse(MalformedRequest(f"{msg} Nothing was forwarded."))


def protocol_factory(limits: ServerLimits) -> functools.partial[GatewayProtocol]:
    """What uvicorn's `http=` takes: GatewayProtocol bound to `limits` (picklable for workers)."""
    return functools.partial(GatewayProtocol, limits)


def main(argv: list[str] | None = None) -> None:
    """Run the gateway's workers; the settings come from GATEWAY_CONFIG and the environment."""
    parser = argparse.ArgumentParser(prog="python -m gateway.api.server")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    fd_limit = raise_fd_limit()
    limits = limits_for(load(None, os.environ), fd_limit)
    config = uvicorn.Config(
        "gateway.api.app:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http=protocol_factory(limits),  # type: ignore[arg-type]
        lifespan="on",
        access_log=False,
        log_level="info",
    )  # configures logging, so the line below is shown
    logging.getLogger("uvicorn.error").info(
        "Each worker holds at most %d connections (of %d file descriptors) and takes request "
        "heads of at most %d bytes and %d fields within %g s, and bodies sending something every "
        "%g s",
        limits.max_connections,
        fd_limit,
        limits.max_header_bytes,
        limits.max_headers,
        limits.header_timeout,
        limits.body_timeout,
    )
    # What uvicorn.run does for these settings (no reload), after the line above.
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if config.workers == 1 and not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE


if __name__ == "__main__":
    # Run the main of the module imported under its own name, not of this `__main__` copy: the
    # app reads that module's `refusals`, and worker processes unpickle its protocol class.
    from gateway.api import server

    server.main()
