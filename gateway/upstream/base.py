"""The seam between the gateway and its providers: what sending a request gives back."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Sequence
from typing import Protocol

from gateway.upstream.routing import Provider

Headers = list[tuple[bytes, bytes]]

# Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus the widespread
# Proxy-Connection), and the framing headers each side sets for itself: never forwarded either way.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"host",
    }
)


def connection_options(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """HOP_BY_HOP plus every header the `Connection` headers name (lower-case), to drop them all.

    RFC 9110 §7.6.1: a proxy removes the headers that Connection lists before forwarding.
    """
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return HOP_BY_HOP | named if named else HOP_BY_HOP


Body = bytes | AsyncIterable[bytes] | None
"""A request body: bytes read whole (JSON), or an upload streamed as it arrives."""


class UpstreamResponse(Protocol):
    """A provider's answer: status and headers at once, the body read or streamed after."""

    status: int
    headers: Headers
    """Response headers, lower-case names, hop-by-hop ones (and content-length) removed."""
    length: int | None
    """The declared content-length; None when the body is chunked or ends with the connection."""

    async def read(self) -> bytes:
        """The whole body. Raises UpstreamTimeout when the provider stalls, UpstreamReset when
        it drops the connection."""
        ...

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some), b"" once the body
        ended; raises as `read` does."""
        ...

    @property
    def ended(self) -> bool:
        """The whole body has arrived and been taken: `next_chunk` has nothing more to give (the
        relay then sends the last piece together with the end of its answer)."""
        ...

    async def close(self) -> None:
        """Release the connection: reused when the body was read to the end, else dropped."""
        ...


class BufferedResponse:
    """An answer whose body was already read (the gateway looked at it before relaying it)."""

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.length: int | None = len(body)
        self._body = body
        self.ended = False

    async def read(self) -> bytes:
        self.ended = True
        return self._body

    async def next_chunk(self) -> bytes:
        if self.ended:
            return b""
        self.ended = True
        return self._body

    async def close(self) -> None:
        return None


class Upstream(Protocol):
    """Sends requests to providers. Raises UpstreamUnreachable (502) or UpstreamTimeout (504)."""

    async def send(
        self,
        provider: Provider,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: Body,
    ) -> UpstreamResponse:
        """Send `method base_url+path`; return once the status line and headers arrived.

        A streamed body that raises (the client hung up, or sent too much) aborts the request:
        the provider never sees it as complete, and `send` raises what the body raised.
        """
        ...

    async def close(self) -> None:
        """Close every pooled connection."""
        ...
