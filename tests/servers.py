"""Real servers for end-to-end tests, each on its own loopback port and its own thread.

`FakeProvider` speaks OpenAI's wire format (JSON and SSE) and records every request it gets, so
tests assert what the provider actually received. `ServedGateway` runs the real app under uvicorn.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from aiohttp import web

from tests.conftest import free_port


@dataclass
class Recorded:
    """One request as the provider saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class StreamWatch:
    """What happened to the one stream that hangs until the client leaves."""

    started: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)


class ThreadedServer:
    """An aiohttp app on a loopback port, served by an event loop in a thread of its own."""

    client_max_size = 1 << 20
    """Largest request body the server reads (aiohttp answers 413 past it)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def routes(self, app: web.Application) -> None:
        """Add the server's routes."""
        raise NotImplementedError

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=self.client_max_size)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class FakeProvider(ThreadedServer):
    """An OpenAI-compatible upstream. The request's model picks the behaviour:

    `error-429` (rate limited, retry-after 7), `error-500`, `error-400-text` (a 400 whose
    `error` is a string), `slow` (answers after 2 s),
    `hang-stream` (one chunk, then waits for the gateway to hang up), `tool-call` (asks for
    get_weather {"city":"Paris"}, streamed or not, chat or Responses), anything else echoes.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.hang = StreamWatch()
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/v1/{tail:.*}", self._handle)
        # Like OpenAI, an unknown path anywhere is a 404 in its error shape.
        app.router.add_route("*", "/{tail:.*}", self._unknown)

    async def _unknown(self, request: web.Request) -> web.Response:
        return _error(404, f"Unknown request URL: {request.method} {request.path}", "not_found")

    def last(self) -> Recorded:
        assert self.requests, "the provider got no request"
        return self.requests[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._answer(request)
        except (TypeError, KeyError, IndexError, AttributeError, ValueError) as exc:
            # What OpenAI does with a body it cannot read: a 400, never a 500 (the fuzz tests
            # count a 5xx as the gateway's own).
            return web.json_response(
                {
                    "error": {
                        "message": f"Invalid request: {type(exc).__name__}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=400,
            )

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = Recorded(
            request.method,
            request.path,
            request.query_string,
            {k.lower(): v for k, v in request.headers.items()},
            body,
        )
        self.requests.append(recorded)
        path = request.path.removeprefix("/v1")
        if request.method == "GET" and path == "/models":
            return web.json_response(
                {
                    "object": "list",
                    "data": [
                        {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "fake"}
                    ],
                }
            )
        if path == "/embeddings":
            return web.json_response(
                {
                    "object": "list",
                    "model": "text-embedding-3-small",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                    "usage": {"prompt_tokens": 2, "total_tokens": 2},
                }
            )
        if path not in ("/chat/completions", "/responses"):
            return _error(404, f"Unknown path {request.path}", "not_found")
        doc = orjson.loads(body)
        model = doc.get("model", "")
        if model == "error-429":
            return web.json_response(
                {
                    "error": {
                        "message": "Rate limit reached for requests",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                status=429,
                headers={"retry-after": "7", "x-ratelimit-remaining-requests": "0"},
            )
        if model == "error-500":
            return _error(500, "The server had an error while processing your request.", None)
        if model == "error-400-text":  # an error that is a string, not OpenAI's object
            return web.json_response({"error": "unsupported parameter: temperature"}, status=400)
        if model == "slow":
            await asyncio.sleep(2)
        if model == "no-usage":
            answer = _completion(doc)
            del answer["usage"]
            return web.json_response(answer)
        if path == "/responses":
            if model == "tool-call" and doc.get("stream"):
                return await self._response_stream(request, _response_object(doc))
            return web.json_response(_response_object(doc))
        if doc.get("stream"):
            return await self._stream(request, doc)
        return web.json_response(_completion(doc), headers={"x-request-id": "req_upstream_1"})

    async def _response_stream(
        self, request: web.Request, answer: dict[str, Any]
    ) -> web.StreamResponse:
        """A Responses stream: created, the function call's argument deltas, completed."""
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        created = {**answer, "status": "in_progress", "output": []}
        await response.write(_event({"type": "response.created", "response": created}))
        for piece in ('{"city":', '"Paris"}'):
            delta = {"type": "response.function_call_arguments.delta", "delta": piece}
            await response.write(_event(delta))
        await response.write(_event({"type": "response.completed", "response": answer}))
        await response.write_eof()
        return response

    async def _stream(self, request: web.Request, doc: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        include_usage = (doc.get("stream_options") or {}).get("include_usage") is True
        extra = {"usage": None} if include_usage else {}
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": doc.get("model"),
        }
        if doc.get("model") == "hang-stream":
            self.hang.started.set()
            try:
                await response.write(
                    _event(
                        {
                            **base,
                            "choices": [
                                {"index": 0, "delta": {"content": "first"}, "finish_reason": None}
                            ],
                            **extra,
                        }
                    )
                )
                for _ in range(600):  # SSE comments until the gateway hangs up (writes then fail)
                    await asyncio.sleep(0.05)
                    await response.write(b": still thinking\n\n")
            except (ConnectionResetError, ConnectionError):
                pass
            finally:
                self.hang.closed.set()
            return response
        if doc.get("model") == "tool-call":
            return await self._tool_stream(response, base, extra, include_usage)
        for word in ["Hello", " from", " the", " fake", " provider"]:
            await response.write(
                _event(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": word}, "finish_reason": None}
                        ],
                        **extra,
                    }
                )
            )
        await response.write(
            _event(
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **extra}
            )
        )
        if include_usage:
            await response.write(
                _event(
                    {
                        **base,
                        "choices": [],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
                    }
                )
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _tool_stream(
        self,
        response: web.StreamResponse,
        base: dict[str, Any],
        extra: dict[str, Any],
        include_usage: bool,
    ) -> web.StreamResponse:
        """Two tool calls streamed as OpenAI does: id and name first, arguments in pieces."""
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": None, "tool_calls": [TOOL_DELTA_HEAD]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
            {"tool_calls": [{**TOOL_DELTA_HEAD, "index": 1, "id": "call_2"}]},
            {"tool_calls": [{"index": 1, "function": {"arguments": '{"city":"Rome"}'}}]},
        ]
        for delta in deltas:
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            await response.write(_event({**base, "choices": [choice], **extra}))
        choice = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
        await response.write(_event({**base, "choices": [choice], **extra}))
        if include_usage:
            usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
            await response.write(_event({**base, "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


TOOL_DELTA_HEAD = {
    "index": 0,
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": ""},
}
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}
"""The function call the fake provider's `tool-call` model asks for."""


def _event(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def _error(status: int, message: str, code: str | None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "server_error", "param": None, "code": code}},
        status=status,
    )


def _completion(doc: dict[str, Any]) -> dict[str, Any]:
    messages = doc.get("messages") or []
    last = messages[-1]["content"] if messages else ""
    if doc.get("model") == "tool-call":
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": "tool-call",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1,
        "model": doc.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo: {last}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


def _response_object(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("model") == "tool-call":
        call = {
            "id": "fc_1",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        }
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": 1,
            "status": "completed",
            "model": "tool-call",
            "output": [call],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11},
        }
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": doc.get("model"),
        "output": [
            {
                "id": "msg_fake",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "fake answer", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11},
    }


class ServedGateway:
    """The real app under uvicorn on a loopback port, in a thread of its own."""

    def __init__(self, app: Any, *, own_protocol: bool = True) -> None:
        """`own_protocol`: serve with the gateway's HTTP protocol (as `gateway serve` does), or
        with uvicorn's own, as another ASGI server would (no `gateway.disconnect` extension)."""
        from gateway.api.server import ServerLimits, protocol_factory

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started_by = os.environ.get("PYTEST_CURRENT_TEST", "")
        """The test that started it, to name in a warning when it does not stop."""
        # The plain asyncio loop: uvloop in a non-main thread has crashed at interpreter exit.
        # The gateway's own HTTP protocol (head deadline and limits), as `gateway serve` runs it.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            loop="asyncio",
            http=protocol_factory(ServerLimits()) if own_protocol else "httptools",  # type: ignore[arg-type]
            log_level="warning",
            access_log=False,
            # A test's client that left a request running (a stream it never read to the end)
            # must not hold the shutdown: uvicorn waits for every connection without a bound.
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the gateway did not start"
            assert self._thread.is_alive(), "the gateway thread died"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)

    @staticmethod
    def stop_all(gateways: list[ServedGateway], seconds: float = 15) -> None:
        """Stop several at once, waiting `seconds` in all (not each): each shuts down in its own
        thread, so the waits overlap. Now and then one of a session's gateways has not stopped
        within 10 s (its loop idle, not yet explained); waiting 10 s for each in turn once took
        the session's teardown to 100 s. One that is still running is left to end with the
        interpreter (a daemon thread) and named on the terminal."""
        for gateway in gateways:
            gateway.server.should_exit = True
        deadline = time.monotonic() + seconds
        for gateway in gateways:
            gateway._thread.join(max(0.0, deadline - time.monotonic()))
        running = [g.started_by or g.url for g in gateways if g._thread.is_alive()]
        if running:  # said past pytest's capture: a warning would fail the run (filterwarnings)
            print(
                f"{len(running)} served gateway(s) did not stop within {seconds:g} s: "
                + "; ".join(running),
                file=sys.__stderr__,
            )


@dataclass
class ReceivedSpan:
    """A span as an OTLP receiver decoded it."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    resource: dict[str, Any]
    start_ns: int = 0


class OtlpReceiver(ThreadedServer):
    """A real OTLP/HTTP receiver on loopback: decodes protobuf trace exports into spans."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self._pb = trace_service_pb2
        self.spans: list[ReceivedSpan] = []
        self.raw: list[bytes] = []
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._export)

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.raw.append(body)
        message = self._pb.ExportTraceServiceRequest()
        message.ParseFromString(body)
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            events=[
                                (e.name, {a.key: _value(a.value) for a in e.attributes})
                                for e in span.events
                            ],
                            status_code=span.status.code,
                            resource=resource,
                            start_ns=span.start_time_unix_nano,
                        )
                    )
        reply = self._pb.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    def wait_for(self, request_id: str, timeout: float = 10.0) -> ReceivedSpan:
        """The span of the call with this request id, polling until it arrives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for span in self.spans:
                if span.attributes.get("gateway.request_id") == request_id:
                    return span
            time.sleep(0.02)
        raise AssertionError(f"no span for {request_id} within {timeout}s")


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


Handler = Any  # async (web.Request, bytes) -> web.StreamResponse


class ScriptedProvider(ThreadedServer):
    """A provider that records every request on any path and answers with the test's handler.

    `handlers` maps a path (as the server decoded it) to an async `(request, body) -> response`;
    other paths get 200 `{"path": ...}`. Tests of the relay use it to play providers that
    compress, stream odd content types, stall or drop the connection.
    """

    client_max_size = 1 << 30  # uploads of hundreds of MB pass through the gateway

    def __init__(self, base_path: str = "/v1") -> None:
        self.requests: list[Recorded] = []
        self.handlers: dict[str, Handler] = {}
        super().__init__()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = self.root + base_path

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    def last(self) -> Recorded:
        assert self.requests, "the provider got no request"
        return self.requests[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(
                request.method,
                request.raw_path.split("?", 1)[0],
                request.query_string,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        handler = self.handlers.get(request.path)
        if handler is not None:
            response: web.StreamResponse = await handler(request, body)
            return response
        return web.json_response({"path": request.path})
