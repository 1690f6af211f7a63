"""The HTTP client for providers: HTTP/1.1 over pooled connections, answers read by httptools.

The gateway's own client rather than aiohttp's, chosen by measurement (benchmarks/README.md, "The
choices"; `benchmarks/bench_upstream.py`): the same loopback load costs aiohttp 111-115 µs of CPU
per request and this client 26-28 µs.
This module and its two neighbours (`connection`, `pool`) are the only ones that speak HTTP to
providers; everything else sees the `Upstream` Protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Sequence

from gateway.errors import UpstreamReset, UpstreamTimeout, UpstreamUnreachable
from gateway.settings import UpstreamSettings
from gateway.upstream.base import (
    HOP_BY_HOP,
    Body,
    Headers,
    UpstreamResponse,
    connection_options,
)
from gateway.upstream.connection import Broken, Connection, ReadTimeout, TotalTimeout
from gateway.upstream.mock import MockUpstream
from gateway.upstream.pool import Exhausted, Pool
from gateway.upstream.routing import Provider

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
_EMPTY_MEANS_ZERO = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose empty body is announced as `content-length: 0` (RFC 9110 §8.6)."""
_FAILURES = (Broken, ReadTimeout, TotalTimeout)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods a client may repeat with the same effect (RFC 9110 §9.2.2)."""
_IDEMPOTENCY_KEYS = frozenset({"idempotency-key", "x-idempotency-key"})
RACE_WINDOW_MAX = 0.25
"""Seconds after a request went out within which a close with no answer may be taken for the
provider's closing of an idle connection crossing the request (`_repeatable`)."""


class HttpResponse:
    """A provider's answer on a pooled connection, behind the UpstreamResponse seam."""

    __slots__ = (
        "_connection",
        "_pool",
        "_provider",
        "_settings",
        "_upload",
        "headers",
        "length",
        "status",
    )

    def __init__(
        self,
        connection: Connection,
        pool: Pool,
        provider: Provider,
        settings: UpstreamSettings,
        upload: asyncio.Task[None] | None,
    ) -> None:
        self._connection = connection
        self._pool = pool
        self._provider = provider
        self._settings = settings
        self._upload = upload
        self.status = connection.status
        self.length = None if connection.chunked else connection.length
        headers: Headers = []
        named = None
        for name, value in connection.headers:
            if name not in HOP_BY_HOP and not name.startswith(b"proxy-"):
                headers.append((name, value))
            elif name == b"connection":
                named = value if named is None else named + b"," + value
        if named is not None and named.lower() not in _PLAIN_CONNECTION:
            # Headers the provider's Connection header names are hop-by-hop too (RFC 9110 §7.6.1).
            dropped = connection_options([(b"connection", named)])
            headers = [(n, v) for n, v in headers if n not in dropped]
        self.headers = headers

    async def read(self) -> bytes:
        connection = self._connection
        pieces = []
        try:
            while piece := await connection.next_chunk():
                pieces.append(piece)
        except _FAILURES as exc:
            raise _answer_failed(self._provider, exc, self._settings) from None
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def next_chunk(self) -> bytes:
        try:
            return await self._connection.next_chunk()
        except _FAILURES as exc:
            raise _answer_failed(self._provider, exc, self._settings) from None

    @property
    def ended(self) -> bool:
        return self._connection.drained

    async def close(self) -> None:
        """Reuse the connection when the answer was read to its end (and the upload, if any,
        was sent whole); otherwise drop it, so the provider stops generating."""
        reuse = self._connection.finish()
        upload = self._upload
        if upload is not None and not upload.done():
            upload.cancel()
            reuse = False
        self._pool.release(self._connection, reuse)


class HttpUpstream:
    """Pooled HTTP/1.1 connections to every provider, opened on first use inside the loop."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._pool = Pool(settings.pool_size)
        self._mock = MockUpstream()

    async def send(
        self,
        provider: Provider,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: Body,
    ) -> UpstreamResponse:
        if provider.is_mock:
            if body is not None and not isinstance(body, bytes):
                async for _ in body:  # the mock serves JSON routes only: drain, keep nothing
                    pass
                body = None
            return await self._mock.send(provider, method, path, headers, body)
        settings = self._settings
        deadline = asyncio.get_running_loop().time() + settings.total_timeout
        if body is None or isinstance(body, bytes):
            size = len(body) if body is not None else 0
            framing = (
                f"content-length: {size}\r\n\r\n" if size or method in _EMPTY_MEANS_ZERO else "\r\n"
            )
            head = request_head(method, provider, path, headers, framing)
            message = head + body if body else head
            return await self._send_whole(provider, method, headers, message, deadline)
        declared = any(name == "content-length" for name, _ in headers)
        framing = "\r\n" if declared else "transfer-encoding: chunked\r\n\r\n"
        head = request_head(method, provider, path, headers, framing)
        # A new connection: a pooled one the provider closes as the upload starts could not be
        # told from a failure, and the body cannot be sent twice.
        connection, _ = await self._connect(provider, deadline, fresh=True)
        connection.start(deadline, settings.read_timeout)
        failed: list[BaseException] = []
        upload = asyncio.create_task(_upload(connection, head, body, not declared, failed))
        try:
            await connection.head()
        except _FAILURES as exc:
            self._pool.release(connection, False)
            upload.cancel()
            if failed:  # the upload broke off: say why, not that the provider failed
                raise failed[0] from None
            raise _send_failed(provider, exc, settings) from None
        except BaseException:
            self._pool.release(connection, False)
            upload.cancel()
            raise
        return HttpResponse(connection, self._pool, provider, settings, upload)

    async def _send_whole(
        self,
        provider: Provider,
        method: str,
        headers: Sequence[tuple[str, str]],
        message: bytes,
        deadline: float,
    ) -> HttpResponse:
        """Send a request held whole in memory; its answer once the headers arrived.

        A pooled connection can be closed by the provider (its idle timeout) just as a request
        goes out on it; the request then meets a closed socket, is never read, and not a byte
        comes back. That request is sent once more on a new connection, as HTTP clients do for
        requests that may be repeated (RFC 9112 §9.3.1: idempotent methods, or an
        `Idempotency-Key`), and for others only when the close came within about two handshakes
        of the request (`_repeatable`): a provider that read the request, worked on it and then
        dropped the connection is answered 502, never asked twice.
        """
        connection, reused = await self._connect(provider, deadline)
        try:
            return await self._exchange(connection, provider, method, message, deadline)
        except Broken as exc:
            if not (reused and not connection.heard and _repeatable(method, headers, connection)):
                raise _send_failed(provider, exc, self._settings) from None
        except _FAILURES as exc:
            raise _send_failed(provider, exc, self._settings) from None
        connection, _ = await self._connect(provider, deadline, fresh=True)
        try:
            return await self._exchange(connection, provider, method, message, deadline)
        except _FAILURES as exc:
            raise _send_failed(provider, exc, self._settings) from None

    async def _connect(
        self, provider: Provider, deadline: float, fresh: bool = False
    ) -> tuple[Connection, bool]:
        settings = self._settings
        try:
            return await self._pool.acquire(
                provider, settings.connect_timeout, deadline, fresh=fresh
            )
        except Exhausted:
            raise UpstreamTimeout(
                f"{provider.label}: all {settings.pool_size} "
                "connections of upstream.pool_size stayed busy for upstream.total_timeout "
                f"({settings.total_timeout:g} s); raise upstream.pool_size if calls queue."
            ) from None
        except TimeoutError:
            reason = (
                f"no connection within upstream.connect_timeout ({settings.connect_timeout:g} s)"
            )
        except OSError as exc:
            reason = f"cannot connect ({exc.strerror or exc})"
        raise UpstreamUnreachable(f"{provider.label} is unreachable: {reason}.")

    async def _exchange(
        self,
        connection: Connection,
        provider: Provider,
        method: str,
        message: bytes,
        deadline: float,
    ) -> HttpResponse:
        connection.start(deadline, self._settings.read_timeout)
        try:
            transport = connection.transport
            assert transport is not None
            transport.write(message)
            connection.sent()
            await connection.head()
        except BaseException:
            self._pool.release(connection, False)
            raise
        if method == "HEAD":
            connection.complete_head_only()
        return HttpResponse(connection, self._pool, provider, self._settings, None)

    async def close(self) -> None:
        self._pool.close()


def request_head(
    method: str, provider: Provider, path: str, headers: Sequence[tuple[str, str]], framing: str
) -> bytes:
    """The request line and headers, ending with `framing` (its length or chunked header and the
    blank line). Raises ValueError when a header would break the message (a line break in a
    configured value) and UnicodeEncodeError for text that is not Latin-1."""
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    text = f"{method} {provider.path}{path} HTTP/1.1\r\nhost: {provider.authority}\r\n"
    text += "".join(lines) + framing
    if text.count("\n") != len(lines) + 2 + framing.count("\n") or text.count("\r") != text.count(
        "\n"
    ):
        raise ValueError("a header or the path holds a line break")
    return text.encode("latin-1")


async def _upload(
    connection: Connection,
    head: bytes,
    body: AsyncIterable[bytes],
    chunked: bool,
    failed: list[BaseException],
) -> None:
    """Send a streamed body as it arrives. What stops it early is kept (for `send` to raise) and
    cuts the connection: the provider never gets a complete body (the chunked terminator or the
    declared length never arrive)."""
    try:
        await connection.write(head)
        async for piece in body:
            if piece:
                await connection.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            await connection.write(b"0\r\n\r\n")
        connection.sent()
    except _FAILURES:
        return  # the connection failed: whoever reads the answer hears why
    except Exception as exc:
        failed.append(exc)
        connection.abort(Broken("the upload broke off"))


def _repeatable(method: str, headers: Sequence[tuple[str, str]], connection: Connection) -> bool:
    """Whether a request that met a closed pooled connection may be sent again (`_send_whole`)."""
    if method in _IDEMPOTENT or any(name in _IDEMPOTENCY_KEYS for name, _ in headers):
        return True
    window = min(RACE_WINDOW_MAX, max(0.01, 2 * connection.opened_in))
    lost, sent = connection.lost_at, connection.sent_at
    return bool(lost) and sent <= lost <= sent + window


def _send_failed(provider: Provider, exc: BaseException, settings: UpstreamSettings) -> Exception:
    """What the client is told when the provider failed before its answer's headers."""
    if isinstance(exc, Broken):
        return UpstreamReset(f"{provider.label} did not answer: {exc}.")
    return _answer_failed(provider, exc, settings)


def _answer_failed(provider: Provider, exc: BaseException, settings: UpstreamSettings) -> Exception:
    """504 naming the deadline that passed, or the provider's broken-off answer."""
    if isinstance(exc, ReadTimeout):
        waited = f"sent nothing for upstream.read_timeout ({settings.read_timeout:g} s)"
        key = "upstream.read_timeout"
    elif isinstance(exc, TotalTimeout):
        waited = f"did not finish within upstream.total_timeout ({settings.total_timeout:g} s)"
        key = "upstream.total_timeout"
    else:
        return UpstreamReset(f"{provider.label} broke off its answer ({exc}).")
    return UpstreamTimeout(f"{provider.label} {waited}; raise {key} if it needs longer.")
