"""The HTTP client for providers: aiohttp, chosen by measurement (see benchmarks/README.md).

This is the only module that imports an HTTP client library; nothing else knows which one it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import aiohttp
from yarl import URL

from gateway.errors import UpstreamTimeout, UpstreamUnreachable
from gateway.settings import UpstreamSettings
from gateway.upstream.base import Headers, UpstreamResponse, connection_options
from gateway.upstream.mock import MockUpstream
from gateway.upstream.routing import Provider


class HttpResponse:
    """An aiohttp response behind the UpstreamResponse seam."""

    def __init__(self, response: aiohttp.ClientResponse, provider: Provider) -> None:
        self._response = response
        self._provider = provider
        self._done = False
        self.status = response.status
        raw = response.raw_headers
        drop = connection_options(raw)
        self.headers: Headers = [
            (lower, value) for name, value in raw if (lower := name.lower()) not in drop
        ]

    async def read(self) -> bytes:
        try:
            body = await self._response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _timeout(self._provider) from exc
        except aiohttp.ClientError as exc:
            raise _unreachable(self._provider, exc) from exc
        self._done = True
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk
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
                total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
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
        body: bytes | None,
    ) -> UpstreamResponse:
        if provider.is_mock:
            return await self._mock.send(provider, method, path, headers, body)
        session = self._session or self._open()
        try:
            response = await session.request(
                method,
                # encoded=True: the checked path goes out byte for byte, never re-normalised.
                URL(provider.base_url + path, encoded=True),
                headers=list(headers),
                data=body,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _timeout(provider) from exc
        except aiohttp.ClientError as exc:
            raise _unreachable(provider, exc) from exc
        return HttpResponse(response, provider)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _unreachable(provider: Provider, exc: BaseException) -> UpstreamUnreachable:
    reason = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    return UpstreamUnreachable(
        f"Provider {provider.name!r} ({provider.address}) is unreachable: {reason}."
    )


def _timeout(provider: Provider) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"Provider {provider.name!r} ({provider.address}) did not answer in time; "
        "raise upstream.read_timeout if it needs longer."
    )
