"""The HTTP client for providers: aiohttp, chosen by measurement (see benchmarks/README.md).

This is the only module that imports an HTTP client library; nothing else knows which one it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence

import aiohttp
from yarl import URL

from gateway.errors import UpstreamReset, UpstreamTimeout, UpstreamUnreachable
from gateway.settings import UpstreamSettings
from gateway.upstream.base import (
    HOP_BY_HOP,
    Body,
    Headers,
    UpstreamResponse,
    connection_options,
)
from gateway.upstream.mock import MockUpstream
from gateway.upstream.routing import Provider

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


class HttpResponse:
    """An aiohttp response behind the UpstreamResponse seam."""

    def __init__(
        self, response: aiohttp.ClientResponse, provider: Provider, settings: UpstreamSettings
    ) -> None:
        self._response = response
        self._provider = provider
        self._settings = settings
        self._done = False
        self.status = response.status
        self.length = response.content_length
        headers: Headers = []
        connection = None
        for name, value in response.raw_headers:
            lower = name.lower()
            if lower not in HOP_BY_HOP and not lower.startswith(b"proxy-"):
                headers.append((lower, value))
            elif lower == b"connection":
                connection = value if connection is None else connection + b"," + value
        if connection is not None and connection.lower() not in _PLAIN_CONNECTION:
            # Headers the provider's Connection header names are hop-by-hop too (RFC 9110 §7.6.1).
            named = connection_options([(b"connection", connection)])
            headers = [(n, v) for n, v in headers if n not in named]
        self.headers = headers

    async def read(self) -> bytes:
        try:
            body = await self._response.read()
        except TimeoutError as exc:
            raise _timeout(self._provider, exc, self._settings) from exc
        except aiohttp.ClientError as exc:
            raise _reset(self._provider, exc) from exc
        self._done = True
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while chunk := await content.readany():
                yield chunk
        except TimeoutError as exc:
            raise _timeout(self._provider, exc, self._settings) from exc
        except aiohttp.ClientError as exc:
            raise _reset(self._provider, exc) from exc
        self._done = True

    async def close(self) -> None:
        if self._done:
            self._response.release()
        else:
            # The body was not read to its end (the client hung up): drop the connection so the
            # provider stops generating, rather than draining or reusing it.
            self._response.close()


class HttpUpstream:
    """One pooled aiohttp session per process, created on first use inside the event loop."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._mock = MockUpstream()
        self._urls: dict[str, tuple[Provider, URL]] = {}
        """The URL of each recent path, built once (with the provider it was built for)."""

    def _open(self) -> aiohttp.ClientSession:
        settings = self._settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.pool_size,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=30,
            ),
            timeout=aiohttp.ClientTimeout(
                total=settings.total_timeout,
                connect=settings.connect_timeout,
                sock_read=settings.read_timeout,
            ),
            auto_decompress=False,  # bytes pass through exactly as the provider sent them
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        return self._session

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
        session = self._session or self._open()
        url = self._urls.get(path)
        if url is None or url[0] is not provider:
            # encoded=True: the checked path goes out byte for byte, never re-normalised.
            url = (provider, URL(provider.base_url + path, encoded=True))
            if len(self._urls) >= 1024:  # bounded: paths come from clients
                self._urls.clear()
            self._urls[path] = url
        failed: list[BaseException] = []
        data = body if body is None or isinstance(body, bytes) else _watched(body, failed)
        try:
            response = await session.request(
                method,
                url[1],
                headers=list(headers),
                data=data,
                allow_redirects=False,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise _unreachable(provider, exc, self._settings) from exc
        except TimeoutError as exc:
            if failed:
                raise failed[0] from exc
            raise _timeout(provider, exc, self._settings) from exc
        except aiohttp.ClientError as exc:
            if failed:  # the upload broke off: say why, not that the provider failed
                raise failed[0] from exc
            raise _unreachable(provider, exc, self._settings) from exc
        return HttpResponse(response, provider, self._settings)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _watched(body: AsyncIterable[bytes], failed: list[BaseException]) -> AsyncIterator[bytes]:
    """The upload as it arrives; what stops it early is kept, since aiohttp reports only that
    the request failed. Raising here aborts the request: the provider never gets a complete
    body (the chunked terminator or the declared length never arrive)."""
    try:
        async for piece in body:
            yield piece
    except Exception as exc:
        failed.append(exc)
        raise


def _reset(provider: Provider, exc: BaseException) -> UpstreamReset:
    return UpstreamReset(
        f"Provider {provider.name!r} ({provider.address}) broke off its answer "
        f"({type(exc).__name__})."
    )


def _unreachable(
    provider: Provider, exc: BaseException, settings: UpstreamSettings
) -> UpstreamUnreachable:
    reason = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        reason = f"no connection within upstream.connect_timeout ({settings.connect_timeout:g} s)"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        reason = f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    return UpstreamUnreachable(
        f"Provider {provider.name!r} ({provider.address}) is unreachable: {reason}."
    )


def _timeout(provider: Provider, exc: TimeoutError, settings: UpstreamSettings) -> UpstreamTimeout:
    """504 naming the deadline that passed: aiohttp raises its ServerTimeoutError subclasses for
    the connect and between-bytes timeouts, and a plain TimeoutError for the total one."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        waited = f"sent nothing for upstream.read_timeout ({settings.read_timeout:g} s)"
        key = "upstream.read_timeout"
    else:
        waited = f"did not finish within upstream.total_timeout ({settings.total_timeout:g} s)"
        key = "upstream.total_timeout"
    return UpstreamTimeout(
        f"Provider {provider.name!r} ({provider.address}) {waited}; raise {key} if it needs longer."
    )
