"""The OpenAI-compatible surface under /v1: a raw ASGI app, so the hot path does only what it must.

Bodies are read once; non-streamed answers are passed through whole with the gateway's headers;
streamed answers are relayed chunk by chunk as they arrive. A client that hangs up mid-stream
cancels the relay, which closes the provider connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson

from gateway.api.errors import error_body
from gateway.core.sse import Outcome, SSETap, read_body
from gateway.errors import GatewayError, PayloadTooLarge
from gateway.service import Call, GatewayService, new_request_id
from gateway.upstream.base import Headers, UpstreamResponse

log = logging.getLogger("gateway.proxy")

Scope = dict[str, Any]
Receive = Any
Send = Any

PREFIX = "/v1"
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


class ProxyApp:
    """ASGI app for every /v1/* path."""

    def __init__(
        self, service: GatewayService, *, max_body_bytes: int, keep_text: bool = False
    ) -> None:
        self._service = service
        self._max_body = max_body_bytes
        self._keep_text = keep_text
        """Collect streamed text (content capture); otherwise only chunks are counted."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        # Forwarded as the client wrote it (percent-encoding kept); prepare() checks it first.
        path = raw_path.decode("latin-1").removeprefix(PREFIX)
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        service = self._service
        call = service.arrive(
            scope["method"],
            path,
            scope["headers"],
            request_id=new_request_id(incoming),
            started=started,
        )
        try:
            try:
                service.prepare(call, await _read_body(receive, self._max_body))
            finally:
                service.trace(call)
            upstream = await service.open(call)
        except GatewayError as exc:
            await _send_error(send, exc, call)
            service.finish(call, status=exc.status, error=exc)
            return
        if call.stream and upstream.status < 300 and _is_event_stream(upstream.headers):
            await self._relay(call, upstream, send, receive)
        else:
            await self._pass_whole(call, upstream, send)

    async def _pass_whole(self, call: Call, upstream: UpstreamResponse, send: Send) -> None:
        waited = time.perf_counter()
        try:
            body = await upstream.read()
        except GatewayError as exc:
            await _send_error(send, exc, call)
            self._service.finish(call, status=exc.status, error=exc)
            return
        finally:
            call.upstream_wait += time.perf_counter() - waited
            await upstream.close()
        headers = _response_headers(call, upstream.headers)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        outcome = Outcome()
        if upstream.status < 300 and call.genai_operation is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                read_body(orjson.loads(body), outcome, keep_text=True)
        self._service.finish(call, status=upstream.status, outcome=outcome)

    async def _relay(
        self, call: Call, upstream: UpstreamResponse, send: Send, receive: Receive
    ) -> None:
        tap = SSETap(orjson.loads, strip_usage=call.strip_usage, keep_text=self._keep_text)
        await send(
            {
                "type": "http.response.start",
                "status": upstream.status,
                "headers": _response_headers(call, upstream.headers),
            }
        )

        async def pump() -> None:
            async for chunk in upstream.chunks():
                out = tap.feed(chunk)
                if out:
                    if call.first_chunk is None:
                        call.first_chunk = time.perf_counter()
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            await send({"type": "http.response.body", "body": tap.finish(), "more_body": False})

        relay = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not relay.done():
                relay.cancel()  # the client hung up: stop reading from the provider
                call.disconnected = True
            with contextlib.suppress(asyncio.CancelledError):
                await relay
        except Exception:
            log.exception("stream relay failed", extra={"request_id": call.request_id})
        finally:
            watcher.cancel()
            relay.cancel()
            await upstream.close()
            self._service.finish(call, status=upstream.status, outcome=tap.outcome)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"The request body is over the gateway's limit of {limit} bytes "
                "(server.max_body_bytes)."
            )
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _is_event_stream(headers: Headers) -> bool:
    return any(n == b"content-type" and v.startswith(b"text/event-stream") for n, v in headers)


# The ASGI server writes its own date and server headers; the provider's would be duplicates.
_REPLACED = frozenset({b"x-request-id", b"date", b"server"})


def _response_headers(call: Call, upstream: Headers) -> Headers:
    headers = [(n, v) for n, v in upstream if n not in _REPLACED]
    for name, value in upstream:
        if name == b"x-request-id":
            headers.append((b"x-upstream-request-id", value))
    headers.extend(_gateway_headers(call))
    return headers


def _gateway_headers(call: Call) -> Headers:
    headers = [
        (b"x-request-id", call.request_id.encode("latin-1")),
        (b"x-gateway-overhead-ms", f"{call.overhead_ms():.3f}".encode()),
    ]
    resolved = call.resolved
    if resolved is not None:
        headers.append((b"x-prompt-name", resolved.version.name.encode()))
        headers.append((b"x-prompt-version", resolved.version.version.encode()))
        headers.append((b"x-prompt-variant", resolved.variant.encode()))
        if resolved.experiment is not None:
            headers.append((b"x-prompt-experiment", resolved.experiment.id.encode()))
    return headers


async def _send_error(send: Send, exc: GatewayError, call: Call) -> None:
    body = error_body(exc)
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *_gateway_headers(call)]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
