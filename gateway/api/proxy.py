"""The OpenAI-compatible surface under /v1: a raw ASGI app, so the hot path does only what it must.

What the relay guarantees (PRODUCT §7):

- JSON bodies are read once, whole (server.max_body_bytes); other bodies are streamed to the
  provider as they arrive (server.max_upload_bytes, `uploads.py`). The JSON bodies held at once
  stay under server.max_buffered_bytes (`BodyBudget`); past it, 503 server_busy.
- Whether an answer is relayed chunk by chunk is decided by the answer: an event stream, or any
  body without a content-length, or one that is not JSON, is passed on as it arrives. Only JSON
  with a length is read whole, to read its usage.
- A compressed event stream stays compressed and live; a decoded copy is read for usage.
- A client that hangs up at any point after its request arrived cancels the provider request at
  once (`HangUp`); the call is recorded with status 499. A provider that breaks off a stream is
  recorded as `upstream_reset` / `upstream_timeout`, and the client's stream is cut too, so it
  never mistakes a broken answer for a complete one. When the server itself ended the request
  (a broken chunked body, a stalled body: `server.REFUSAL`), the call is recorded with that
  error instead.
- The overhead header and metric exclude every wait for the provider, headers and body alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from gateway.api.disconnect import Disconnect, disconnect_of
from gateway.api.errors import error_body
from gateway.api.server import REFUSAL
from gateway.api.uploads import MODEL_FORMS, Upload
from gateway.core.chat import wants_usage
from gateway.core.encoding import DecodeError, Recoder, codec_of
from gateway.core.multipart import form_boundary
from gateway.core.sse import DeferredTap, Outcome, read_body
from gateway.errors import (
    ClientClosedRequest,
    GatewayError,
    PayloadTooLarge,
    ServerBusy,
    UpstreamReset,
)
from gateway.service import Call, GatewayService, new_request_id, read_stream
from gateway.upstream.base import Headers, UpstreamResponse

log = logging.getLogger("gateway.proxy")

Scope = dict[str, Any]
Receive = Any
Send = Any

PREFIX = "/v1"
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
WATCH_AFTER = 0.02
"""Seconds after the request is read before a hang-up watcher starts (see HangUp)."""


class HangUp:
    """Cancels the task serving a call when its client disconnects.

    Armed once the request body has been read (until then, reading the body notices a hang-up
    itself); disarmed before the last byte of the answer is sent. Under the gateway's own server
    protocol the connection's loss is reported to it directly (`disconnect`, the
    `gateway.disconnect` scope extension): arming costs an attribute, and a client that left
    before it was armed is acted on when it is. Under another ASGI server it watches for the
    `http.disconnect` message (which a finished response sends too, hence the disarming), in a
    task that starts only when the call is still running WATCH_AFTER seconds later (`Watches`
    checks the armed calls on one timer): a call answered sooner never pays for it.
    """

    __slots__ = ("_disconnect", "_owner", "_receive", "_watch", "_watches", "fired")

    def __init__(
        self, receive: Receive, watches: Watches, disconnect: Disconnect | None = None
    ) -> None:
        self._receive = receive
        self._watches = watches
        self._disconnect = disconnect
        self._owner = asyncio.current_task()
        self._watch: asyncio.Task[None] | None = None
        self.fired = False

    def arm(self) -> None:
        """Cancel the call when its client disconnects from now on (or has already)."""
        if self._owner is None:
            return
        disconnect = self._disconnect
        if disconnect is None:
            self._watches.add(self)
        elif disconnect.lost:
            self._fire()
        else:
            disconnect.callback = self._fire

    def disarm(self) -> None:
        """Stop watching (the answer is complete, or the call is over)."""
        if self._disconnect is not None:
            self._disconnect.callback = None
            return
        self._watches.discard(self)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def start(self) -> None:
        """Start the watching task now."""
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._wait())

    async def _wait(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._fire()

    def _fire(self) -> None:
        self.fired = True
        assert self._owner is not None
        self._owner.cancel()


class Watches:
    """The armed HangUps of one app, started by one timer instead of a timer per call."""

    def __init__(self) -> None:
        self._armed: dict[HangUp, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, hang_up: HangUp) -> None:
        self._armed[hang_up] = time.perf_counter()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER, self._tick)

    def discard(self, hang_up: HangUp) -> None:
        self._armed.pop(hang_up, None)

    def _tick(self) -> None:
        self._timer = None
        due = time.perf_counter() - WATCH_AFTER
        for hang_up, armed_at in list(self._armed.items()):
            if armed_at <= due:
                del self._armed[hang_up]
                hang_up.start()
        if self._armed:
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER, self._tick)


class BodyBudget:
    """Bytes of JSON request bodies this process holds at once, at most `limit`.

    Bytes are taken as they are read and given back when their call is over, whatever ends it.
    Bodies are read whole (the gateway edits them), so without a bound a burst of large bodies
    holds a multiple of max_body_bytes (measured: 100 bodies of 10 MiB, 962 MB resident).
    """

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        """Count `size` more bytes held; ServerBusy, with nothing taken, if past the limit."""
        held = self.held + size
        if held > self.limit:
            raise ServerBusy(
                f"The gateway holds {self.held} bytes of request bodies, and this one's "
                f"{size} more would pass its limit of {self.limit} bytes "
                "(server.max_buffered_bytes); retry shortly."
            )
        self.held = held

    def give(self, size: int) -> None:
        """Count `size` bytes no longer held."""
        self.held -= size


class ProxyApp:
    """ASGI app for every /v1/* path."""

    def __init__(
        self,
        service: GatewayService,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        max_buffered_bytes: int = 256 << 20,
        keep_text: bool = False,
    ) -> None:
        self._service = service
        self._max_body = max_body_bytes
        self.budget = BodyBudget(max_buffered_bytes)
        self._max_upload = max_upload_bytes
        self._keep_text = keep_text
        """Collect streamed text (content capture); otherwise only chunks are counted."""
        self._watches = Watches()

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
        hang_up = HangUp(receive, self._watches, disconnect_of(scope))
        held = 0  # bytes of the body taken from the budget
        try:
            try:
                try:
                    if _is_upload(call):
                        await self._prepare_upload(call, receive, hang_up)
                    else:
                        waited = time.perf_counter()
                        body = await _read_body(
                            receive, self._max_body, call.content_length, self.budget
                        )
                        held = len(body)
                        call.client_wait = time.perf_counter() - waited
                        hang_up.arm()
                        service.prepare(call, body)
                finally:
                    service.trace(call)
                upstream = await service.open(call)
            except ClientClosedRequest:
                self._closed_by_client(call, scope)
                return
            except GatewayError as exc:
                hang_up.disarm()
                await _send_error(send, exc, call)
                service.finish(call, status=exc.status, error=exc)
                return
            except Exception as exc:  # a bug: still an OpenAI error, logged, traced, counted
                hang_up.disarm()
                error = _internal(call, exc)
                await _send_error(send, error, call)
                service.finish(call, status=error.status, error=error)
                return
            try:
                if _is_whole_json(upstream, self._max_body):
                    await self._pass_whole(call, upstream, send, hang_up)
                else:
                    await self._relay(call, upstream, send, hang_up)
            except Exception as exc:  # a bug once the answer may have started: log, count, cut
                error = _internal(call, exc)
                if not call.finished:
                    service.finish(call, status=error.status, error=error)
                raise
            finally:
                await upstream.close()
        except asyncio.CancelledError:
            if not hang_up.fired:
                raise  # the server is shutting down, not the client leaving
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._closed_by_client(call, scope)
        finally:
            hang_up.disarm()
            if held:
                self.budget.give(held)

    async def _prepare_upload(self, call: Call, receive: Receive, hang_up: HangUp) -> None:
        if call.content_length is not None and call.content_length > self._max_upload:
            raise PayloadTooLarge(
                f"The upload declares {call.content_length} bytes, over the gateway's limit of "
                f"{self._max_upload} bytes (server.max_upload_bytes)."
            )
        upload = Upload(receive, limit=self._max_upload, on_complete=hang_up.arm)
        model = None
        boundary = form_boundary(call.content_type)  # as sent: boundaries are case-sensitive
        if boundary is not None and call.route in MODEL_FORMS and self._service.routes_by_model:
            waited = time.perf_counter()
            model = await upload.find_field(boundary, "model")
            call.client_wait = time.perf_counter() - waited
        self._service.prepare_upload(call, upload.pieces(), model)

    def _closed_by_client(self, call: Call, scope: Scope) -> None:
        call.disconnected = True
        if call.finished:
            return
        refusal = scope.get(REFUSAL)
        if isinstance(refusal, GatewayError):
            # The server answered for the call (a broken or stalled body): the client did
            # nothing wrong by leaving, and the call is recorded with that answer.
            self._service.finish(call, status=refusal.status, error=refusal)
            return
        outcome = call.outcome
        read_stream(call)
        if outcome is not None and outcome.complete and call.status is not None:
            # The client had the whole answer and left before the provider closed the body
            # (the SDKs stop reading at [DONE]): that is a complete call, not a hang-up.
            self._service.finish(call, status=call.status, outcome=outcome)
            return
        self._service.finish(
            call,
            status=ClientClosedRequest.status,
            outcome=outcome,
            error=ClientClosedRequest("The client closed the connection first."),
        )

    async def _pass_whole(
        self, call: Call, upstream: UpstreamResponse, send: Send, hang_up: HangUp
    ) -> None:
        waited = time.perf_counter()
        try:
            body = await upstream.read()
        except GatewayError as exc:
            hang_up.disarm()
            await _send_error(send, exc, call)
            self._service.finish(call, status=exc.status, error=exc)
            return
        finally:
            call.upstream_wait += time.perf_counter() - waited
        headers = _response_headers(call, upstream.headers)
        # A HEAD's answer has no body but says the length a GET's would have.
        length = upstream.length if call.method == "HEAD" and upstream.length else len(body)
        headers.append((b"content-length", str(length).encode()))
        hang_up.disarm()
        await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        outcome = (
            _json_outcome(upstream.headers, body)
            if upstream.status < 300 and call.genai_operation is not None
            else Outcome()
        )
        self._service.finish(call, status=upstream.status, outcome=outcome)

    async def _relay(
        self, call: Call, upstream: UpstreamResponse, send: Send, hang_up: HangUp
    ) -> None:
        tap = recoder = None
        if _header(upstream.headers, b"content-type").startswith("text/event-stream"):
            try:
                codec = codec_of(_header(upstream.headers, b"content-encoding") or None)
            except ValueError:  # a coding the gateway cannot read: relayed untouched, unread
                codec = None
            else:
                tap = DeferredTap(
                    orjson.loads,
                    strip_usage=call.strip_usage,
                    keep_text=self._keep_text or _estimates_usage(call),
                    keep_tool_calls=self._keep_text,
                )
                recoder = Recoder(codec) if codec else None
        call.tap = tap
        call.outcome = tap.outcome if tap is not None else None
        call.status = upstream.status
        # A JSON answer without a length (chunked): relayed as it comes, a bounded copy kept to
        # read its usage at the end.
        copy: list[bytes] | None = (
            []
            if tap is None
            and call.genai_operation is not None
            and upstream.status < 300
            and "json" in _header(upstream.headers, b"content-type")
            else None
        )
        copied = 0
        await send(
            {
                "type": "http.response.start",
                "status": upstream.status,
                "headers": _response_headers(call, upstream.headers),
            }
        )
        last = b""  # the piece that arrived with the end of the provider's body
        try:
            while True:
                waited = time.perf_counter()
                try:
                    chunk = await upstream.next_chunk()
                finally:
                    call.upstream_wait += time.perf_counter() - waited
                if not chunk:
                    break
                if tap is None:
                    out = chunk
                    if copy is not None:
                        copied += len(chunk)
                        if copied <= self._max_body:
                            copy.append(chunk)
                        else:
                            copy = None
                elif recoder is None:
                    out = tap.feed(chunk)
                elif call.strip_usage:  # the gateway edits the stream: compress its edit again
                    out = recoder.encode(tap.feed(recoder.decode(chunk)))
                else:  # forward the provider's bytes; read a decoded copy
                    tap.feed(recoder.decode(chunk))
                    out = chunk
                if upstream.ended:
                    # Sent with the end of the answer: one message and one write, not two.
                    last = out
                    break
                if out:
                    if call.first_chunk is None:
                        call.first_chunk = time.perf_counter()
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except (GatewayError, *DecodeError) as exc:
            error = exc if isinstance(exc, GatewayError) else _corrupt(call)
            log.warning(
                "provider stream broke off: %s",
                error.message,
                extra={"request_id": call.request_id},
            )
            # Returning without the last body message cuts the client's connection: a broken
            # answer must not look complete.
            self._service.finish(call, status=upstream.status, outcome=call.outcome, error=error)
            return
        outcome = _json_outcome(upstream.headers, b"".join(copy)) if copy else call.outcome
        if tap is not None:
            tail = tap.finish()
            if recoder is not None:
                tail = recoder.encode(tail) + recoder.finish() if call.strip_usage else b""
            if tail:
                last += tail
        if last and call.first_chunk is None:
            call.first_chunk = time.perf_counter()
        hang_up.disarm()
        await send({"type": "http.response.body", "body": last, "more_body": False})
        self._service.finish(call, status=upstream.status, outcome=outcome)


def _is_upload(call: Call) -> bool:
    """A body to stream, not to read: a non-JSON body on a path that is not chat or responses."""
    content_type = call.content_type.lower()
    return (
        call.operation == "proxy"
        and call.method in _BODY_METHODS
        and bool(content_type)
        and not content_type.startswith("application/json")
        and "+json" not in content_type.split(";", 1)[0]
    )


def _is_whole_json(upstream: UpstreamResponse, limit: int) -> bool:
    """A JSON answer of known, bounded length: read whole (for its usage), then sent."""
    length = upstream.length
    return (
        length is not None
        and length <= limit
        and "json" in _header(upstream.headers, b"content-type")
    )


def _estimates_usage(call: Call) -> bool:
    """A chat stream that will carry no usage: keep its text to count tokens with tiktoken."""
    request = call.request
    return (
        call.operation == "chat"
        and not call.strip_usage
        and not (request is not None and wants_usage(request))
    )


def _json_outcome(headers: Headers, body: bytes) -> Outcome:
    """What a JSON answer says (usage, ids, text); read from a decoded copy when compressed."""
    outcome = Outcome()
    try:  # not contextlib.suppress: its object and calls cost more than the rest, per call
        encoding = _header(headers, b"content-encoding")
        if encoding:  # a provider that compressed anyway
            codec = codec_of(encoding)
            body = Recoder(codec).decode(body) if codec else body
        read_body(orjson.loads(body), outcome, keep_text=True)
    except _UNREADABLE:
        pass
    return outcome


_UNREADABLE = (orjson.JSONDecodeError, ValueError, *DecodeError)


def _header(headers: Headers, name: bytes) -> str:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").lower()
    return ""


def _internal(call: Call, exc: Exception) -> GatewayError:
    """The error a client gets for a bug in the gateway, logged with the call's request id and
    traceback (the client's message holds neither)."""
    log.error("unhandled error in call %s", call.request_id, exc_info=exc)
    return GatewayError(
        f"The gateway failed to handle this request ({type(exc).__name__}); it is logged under "
        f"request id {call.request_id}."
    )


def _corrupt(call: Call) -> GatewayError:
    return UpstreamReset(f"Provider {call.provider.name!r} sent a corrupt compressed stream.")


async def _read_body(
    receive: Receive, limit: int, declared: int | None, budget: BodyBudget
) -> bytes:
    """The whole body, its bytes taken from `budget` as they arrive; the caller gives back
    len(body) when the call is over. On any error what was taken is given back here."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"The request body declares {declared} bytes, over the gateway's limit of {limit} "
            "bytes for JSON bodies (server.max_body_bytes)."
        )
    # One growing bytearray, not a list of chunks: its storage is one block that goes back to
    # the operating system when freed, where a burst of many chunked bodies left the heap
    # fragmented and the process at its peak (measured: 100 bodies of 10 MiB held 600 MiB).
    buffer = bytearray()
    taken = 0
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientClosedRequest(
                    f"The client hung up after {len(buffer)} bytes of its request body; "
                    "nothing was sent."
                )
            chunk: bytes = message.get("body", b"")
            if not buffer and not message.get("more_body"):
                if len(chunk) > limit:
                    raise _over_limit(limit)
                budget.take(len(chunk))
                return chunk  # the whole body in one message: the common case, no copy
            if len(buffer) + len(chunk) > limit:
                raise _over_limit(limit)
            budget.take(len(chunk))
            taken += len(chunk)
            buffer += chunk
            if not message.get("more_body"):
                return bytes(buffer)
    except BaseException:
        budget.give(taken)
        raise


def _over_limit(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is over the gateway's limit of {limit} bytes (server.max_body_bytes)."
    )


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
        headers.append((b"x-prompt-replaced-system", b"%d" % (call.replaced_system or 0)))
        if resolved.experiment is not None:
            headers.append((b"x-prompt-experiment", resolved.experiment.id.encode()))
    return headers


async def _send_error(send: Send, exc: GatewayError, call: Call) -> None:
    body = error_body(exc)
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *_gateway_headers(call)]
    if exc.retry_after is not None:
        headers.append((b"retry-after", b"%d" % exc.retry_after))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
