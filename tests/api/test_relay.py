"""The relay as a transparent pipe, played against providers that misbehave the ways real ones do.

Each provider here is a real HTTP server on loopback (ScriptedProvider) whose handler the test
writes: answers that stream without a length, compress what they were asked not to, send one
huge event, refuse unknown fields, stall, or drop the connection. Streaming tests hold the
provider at a gate until the client has seen the first bytes, so a gateway that buffered would
fail them by timing out, not by a timing threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import brotli
import httpx
import openai
import orjson
import pytest
import zstandard
from aiohttp import web

from gateway.service import Call, read_stream
from tests.api.conftest import MakeGateway
from tests.servers import OtlpReceiver, ScriptedProvider, ServedGateway

Handler = Callable[[web.Request, bytes], Any]
FAST = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedProvider]:
    """One provider for the module; each test installs its own handlers."""
    server = ScriptedProvider()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """A real OTLP receiver: the spans say what the gateway recorded for each call."""
    sink = OtlpReceiver()
    yield sink
    sink.stop()


@pytest.fixture
def relay(
    make_gateway: MakeGateway, scripted: ScriptedProvider, receiver: OtlpReceiver
) -> ServedGateway:
    """A fresh gateway (fresh metrics) in front of the scripted provider, traced."""
    scripted.handlers.clear()
    return make_gateway(
        GATEWAY_UPSTREAM_URL=scripted.url, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, **FAST
    )


class Gate:
    """Holds a provider handler until the test, having seen the first bytes, opens it."""

    def __init__(self) -> None:
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    async def wait(self, limit: float = 10.0) -> None:
        await asyncio.to_thread(self._open.wait, limit)


def metric(gateway: ServedGateway, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample over the series whose labels include `labels`."""
    total = 0.0
    for line in httpx.get(gateway.url + "/metrics").text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def sse(doc: dict[str, Any], end: bytes = b"\n\n") -> bytes:
    return b"data: " + orjson.dumps(doc) + end


def chunk(content: str | None, *, finish: str | None = None, model: str = "m") -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-r",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def chat_events(model: str, *, usage: bool, end: bytes = b"\n\n") -> list[bytes]:
    events = [sse(chunk("Hel", model=model), end), sse(chunk("lo", model=model), end)]
    events.append(sse(chunk(None, finish="stop", model=model), end))
    if usage:
        events.append(sse({**chunk(None, model=model), "choices": [], "usage": USAGE}, end))
    return [*events, b"data: [DONE]" + end]


def stream_body(model: str, **extra: Any) -> bytes:
    messages = [{"role": "user", "content": "hi"}]
    return orjson.dumps({"model": model, "messages": messages, "stream": True, **extra})


@pytest.fixture
def whisper_b(make_gateway: MakeGateway, scripted: ScriptedProvider) -> Iterator[Any]:
    """Provider B for `whisper-*` models (key sk-key-b), the scripted provider A (sk-key-a) for
    the rest: yields (gateway, B)."""
    other = ScriptedProvider()
    try:
        gateway = make_gateway(
            "providers:\n"
            f"  a: {{base_url: '{scripted.url}', api_key: sk-key-a}}\n"
            f"  b: {{base_url: '{other.url}', api_key: sk-key-b}}\n"
            "routes:\n  - {model: 'whisper-*', provider: b}\n  - {model: '*', provider: a}\n",
            GATEWAY_UPSTREAM_URL="",
        )
        yield gateway, other
    finally:
        other.stop()


# ---- 2. Stream by what the provider sends --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/audio/speech", "audio/mpeg"),
        ("/v1/audio/speech", "audio/wav"),
        ("/v1/files/file-1/content", "application/octet-stream"),
        ("/v1/batches/stream", "application/x-ndjson"),
        ("/v1/responses/resp_1?stream=true", "text/event-stream"),
    ],
)
def test_an_answer_without_a_length_is_relayed_as_it_arrives(
    relay: ServedGateway, scripted: ScriptedProvider, path: str, content_type: str
) -> None:
    """Chunked answers of any type reach the client while the provider is still sending."""
    gate = Gate()

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": content_type})
        await response.prepare(request)
        await response.write(b"first-bytes\n\n")
        await gate.wait()
        await response.write(b"the-rest\n\n")
        await response.write_eof()
        return response

    scripted.handlers[path.split("?")[0]] = answer
    method = "GET" if "?" in path or "content" in path or "batches" in path else "POST"
    with httpx.stream(
        method,
        relay.url + path,
        content=b"{}" if method == "POST" else None,
        headers={"content-type": "application/json"},
        timeout=5,
    ) as response:
        pieces = response.iter_raw()
        assert next(pieces).startswith(b"first-bytes")  # before the provider finished
        gate.open()
        rest = b"".join(pieces)
    assert rest.endswith(b"the-rest\n\n")


def test_a_transcription_stream_from_a_multipart_upload_is_live(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """A multipart upload with stream=true gets its SSE answer event by event."""
    gate = Gate()

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        assert b'name="stream"' in body
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse({"type": "transcript.text.delta", "delta": "Hel"}))
        await gate.wait()
        await response.write(sse({"type": "transcript.text.done", "text": "Hello"}))
        await response.write_eof()
        return response

    scripted.handlers["/v1/audio/transcriptions"] = answer
    files = {"file": ("a.wav", b"RIFF" + b"\0" * 1000, "audio/wav")}
    data = {"model": "gpt-4o-transcribe", "stream": "true"}
    request = httpx.Request("POST", relay.url + "/v1/audio/transcriptions", files=files, data=data)
    with httpx.Client(timeout=5) as client:
        response = client.send(request, stream=True)
        lines = response.iter_lines()
        assert "transcript.text.delta" in next(lines)
        gate.open()
        assert "transcript.text.done" in "".join(lines)
        response.close()


class Compressor:
    """A provider's streaming compressor for one content coding, flushed after every piece."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        if coding == "br":
            self._br = brotli.Compressor()
        elif coding == "zstd":
            self._zstd = zstandard.ZstdCompressor().compressobj()
        else:
            self._zlib = zlib.compressobj(wbits=31 if coding == "gzip" else 15)

    def piece(self, data: bytes) -> bytes:
        if self.coding == "br":
            return bytes(self._br.process(data) + self._br.flush())
        if self.coding == "zstd":
            compressed = self._zstd.compress(data)
            return bytes(compressed + self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        if self.coding == "br":
            return bytes(self._br.finish())
        if self.coding == "zstd":
            return bytes(self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
        return self._zlib.flush()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_a_compressed_stream_stays_live_and_usage_is_still_read(
    relay: ServedGateway, scripted: ScriptedProvider, coding: str
) -> None:
    """A provider that compresses SSE anyway: the client gets it compressed, live, without the
    usage chunk it did not ask for, and the call's tokens are the provider's."""
    gate = Gate()
    model = f"gz-{coding}"

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        assert orjson.loads(body)["stream_options"] == {"include_usage": True}
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "content-encoding": coding}
        )
        await response.prepare(request)
        compressor = Compressor(coding)
        events = chat_events(model, usage=True)
        for i, event in enumerate(events):
            await response.write(compressor.piece(event))
            if i == 0:
                await gate.wait()
        await response.write(compressor.end())
        await response.write_eof()
        return response

    scripted.handlers["/v1/chat/completions"] = answer
    with httpx.stream(
        "POST",
        relay.url + "/v1/chat/completions",
        content=stream_body(model),
        headers={"content-type": "application/json", "accept-encoding": coding},
        timeout=5,
    ) as response:
        assert response.headers["content-encoding"] == coding
        decoded = response.iter_bytes()  # httpx decodes every one of these codings
        assert b"Hel" in next(decoded)
        gate.open()
        text = b"".join(decoded)
    assert b'"usage"' not in text and text.endswith(b"data: [DONE]\n\n")
    assert metric(relay, "gateway_tokens_total", direction="input", model=model) == 5
    assert metric(relay, "gateway_tokens_total", direction="output", model=model) == 2


def test_a_compressed_stream_the_client_asked_usage_for_is_byte_identical(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """When the gateway changes nothing, the compressed bytes pass exactly as sent."""
    sent = gzip.compress(b"".join(chat_events("gz-same", usage=True)))

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "content-encoding": "gzip"}
        )
        await response.prepare(request)
        for i in range(0, len(sent), 50):
            await response.write(sent[i : i + 50])
        await response.write_eof()
        return response

    scripted.handlers["/v1/chat/completions"] = answer
    body = stream_body("gz-same", stream_options={"include_usage": True})
    with httpx.stream(
        "POST",
        relay.url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=5,
    ) as response:
        assert b"".join(response.iter_raw()) == sent
    assert metric(relay, "gateway_tokens_total", direction="input", model="gz-same") == 5


@pytest.mark.parametrize("end", [b"\r\n\r\n", b"\r\r", b"\n\n"])
def test_any_sse_line_end_is_read(
    relay: ServedGateway, scripted: ScriptedProvider, end: bytes
) -> None:
    """CR-only and CRLF streams are split into events: the usage chunk is removed and read."""
    model = "line-end-" + {b"\r\n\r\n": "crlf", b"\r\r": "cr", b"\n\n": "lf"}[end]

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in chat_events(model, usage=True, end=end):
            for i in range(0, len(event), 9):  # split everywhere, line ends included
                await response.write(event[i : i + 9])
        await response.write_eof()
        return response

    scripted.handlers["/v1/chat/completions"] = answer
    with openai.OpenAI(base_url=relay.url + "/v1", api_key="sk-x", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert all(c.usage is None for c in chunks)
    assert metric(relay, "gateway_tokens_total", direction="output", model=model) == 2


def test_a_chunk_whose_choices_are_not_a_list_is_relayed_and_read_around(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """`"choices": 1` in a CRLF stream split everywhere (read at once, by SSETap) cut the
    client's stream with a 500 record: now it passes as sent, and the usage is still read."""
    model = "choices-number"
    odd = b'data: {"id":"chatcmpl-r","model":"' + model.encode() + b'","choices":1}\r\n\r\n'
    events = chat_events(model, usage=True, end=b"\r\n\r\n")
    events.insert(1, odd)

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            for i in range(0, len(event), 7):
                await response.write(event[i : i + 7])
        await response.write_eof()
        return response

    scripted.handlers["/v1/chat/completions"] = answer
    received = b""
    with httpx.stream(
        "POST",
        relay.url + "/v1/chat/completions",
        content=stream_body(model),
        headers={"content-type": "application/json"},
    ) as response:
        assert response.status_code == 200
        for piece in response.iter_raw():
            received += piece
    assert received == b"".join(events[:4] + events[5:])  # all but the usage chunk
    assert metric(relay, "gateway_tokens_total", direction="output", model=model) == 2


def test_a_16_mib_event_passes_whole(relay: ServedGateway, scripted: ScriptedProvider) -> None:
    """One 16 MiB event (an image's partial) reaches the client intact."""
    event = (
        b"event: response.image_generation_call.partial_image\ndata: "
        + orjson.dumps(
            {
                "type": "response.image_generation_call.partial_image",
                "partial_image_b64": "QUFB" * (4 << 20),
            }
        )
        + b"\n\n"
    )

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i in range(0, len(event), 1 << 16):
            await response.write(event[i : i + (1 << 16)])
        await response.write_eof()
        return response

    scripted.handlers["/v1/responses"] = answer
    body = orjson.dumps({"model": "gpt-image", "input": "draw", "stream": True})
    with httpx.stream(
        "POST",
        relay.url + "/v1/responses",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    ) as response:
        got = b"".join(response.iter_raw())
    assert got == event
    assert httpx.get(relay.url + "/healthz").status_code == 200


# ---- 3. Rewrite nothing the client did not ask for: stream_options ---------------------------


def _strict(seen: list[dict[str, Any]], model: str) -> Handler:
    """A vLLM-like provider: 400 extra_forbidden for stream_options, else a stream without usage."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        doc = orjson.loads(body)
        seen.append(doc)
        if "stream_options" in doc:
            return web.json_response(
                {
                    "object": "error",
                    "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), "
                    "'msg': 'Extra inputs are not permitted'}]",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
                status=400,
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in chat_events(model, usage=False):
            await response.write(event)
        await response.write_eof()
        return response

    return answer


def test_a_backend_that_refuses_stream_options_gets_the_stream_without_it(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """The first stream is retried once without stream_options; later ones never carry it, and
    tokens are counted by the gateway."""
    seen: list[dict[str, Any]] = []
    scripted.handlers["/v1/chat/completions"] = _strict(seen, "strict-model")
    with openai.OpenAI(base_url=relay.url + "/v1", api_key="sk-x", max_retries=0) as client:
        for _ in range(2):
            chunks = list(
                client.chat.completions.create(
                    model="strict-model",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                )
            )
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
                "Hello"
            )
    assert ["stream_options" in doc for doc in seen] == [True, False, False]
    assert metric(relay, "gateway_tokens_total", direction="output", model="strict-model") > 0


def test_a_400_that_does_not_name_stream_options_is_passed_on(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """Any other 400 reaches the client unchanged, and nothing is retried."""
    seen: list[bytes] = []

    async def answer(request: web.Request, body: bytes) -> web.Response:
        seen.append(body)
        return web.json_response({"error": {"message": "bad temperature"}}, status=400)

    scripted.handlers["/v1/chat/completions"] = answer
    response = httpx.post(
        relay.url + "/v1/chat/completions",
        content=stream_body("x"),
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()) == (
        400,
        {"error": {"message": "bad temperature"}},
    )
    assert len(seen) == 1


def test_stream_usage_false_never_adds_stream_options(
    make_gateway: MakeGateway, scripted: ScriptedProvider
) -> None:
    """A provider configured with stream_usage: false gets streams exactly as written."""
    seen: list[dict[str, Any]] = []
    scripted.handlers["/v1/chat/completions"] = _strict(seen, "vllm")
    gateway = make_gateway(
        f"providers:\n  vllm:\n    base_url: {scripted.url}\n    stream_usage: false\n",
        GATEWAY_UPSTREAM_URL="",
    )
    body = stream_body("vllm")
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    ) as response:
        assert response.status_code == 200
        response.read()
    assert ["stream_options" in doc for doc in seen] == [False]


# ---- 4. Bodies ---------------------------------------------------------------------------------


def _recording(received: list[bytes]) -> Handler:
    async def answer(request: web.Request, body: bytes) -> web.Response:
        received.append(body)
        return web.json_response({"text": "ok", "bytes": len(body)})

    return answer


def test_a_12_mb_transcription_upload_streams_through(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """Uploads are not held to the JSON limit: 12 MB of audio reaches the provider intact."""
    received: list[bytes] = []
    scripted.handlers["/v1/audio/transcriptions"] = _recording(received)
    audio = bytes(range(256)) * (12_000_000 // 256)
    with openai.OpenAI(base_url=relay.url + "/v1", api_key="sk-x", max_retries=0) as client:
        result = client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", audio))
    assert result.text == "ok"
    assert audio in received[0]


def test_files_create_streams_through(relay: ServedGateway, scripted: ScriptedProvider) -> None:
    """files.create with a 12 MB file is forwarded, not refused with 413."""
    received: list[bytes] = []

    async def answer(request: web.Request, body: bytes) -> web.Response:
        received.append(body)
        return web.json_response(
            {
                "id": "file-1",
                "object": "file",
                "bytes": len(body),
                "created_at": 1,
                "filename": "batch.jsonl",
                "purpose": "batch",
                "status": "processed",
            }
        )

    scripted.handlers["/v1/files"] = answer
    content = b'{"custom_id": "1"}\n' * 700_000
    with openai.OpenAI(base_url=relay.url + "/v1", api_key="sk-x", max_retries=0) as client:
        created = client.files.create(file=("batch.jsonl", content), purpose="batch")
    assert created.id == "file-1" and content in received[0]


def test_json_bodies_keep_their_limit(
    make_gateway: MakeGateway, scripted: ScriptedProvider
) -> None:
    """A JSON body over server.max_body_bytes is 413; an upload over max_upload_bytes too."""
    gateway = make_gateway(
        GATEWAY_UPSTREAM_URL=scripted.url,
        GATEWAY_MAX_BODY_BYTES="1000",
        GATEWAY_MAX_UPLOAD_BYTES="5000",
    )
    big_json = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]})
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=big_json,
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")
    before = len(scripted.requests)
    response = httpx.post(
        gateway.url + "/v1/files", files={"file": ("a.bin", b"\0" * 6000)}, data={"purpose": "x"}
    )
    assert response.status_code == 413
    small = httpx.post(
        gateway.url + "/v1/files", files={"file": ("a.bin", b"\0" * 100)}, data={"purpose": "x"}
    )
    assert small.status_code == 200
    assert len(scripted.requests) == before + 1


@pytest.mark.parametrize("model_first", [True, False], ids=["python-order", "node-order"])
def test_a_multipart_upload_is_routed_by_its_model_field(
    whisper_b: tuple[ServedGateway, ScriptedProvider], model_first: bool
) -> None:
    """model=whisper-1 with a route whisper-* -> B goes to B with B's key, in either field order."""
    gateway, other = whisper_b
    received: list[bytes] = []
    other.handlers["/v1/audio/transcriptions"] = _recording(received)
    boundary = "----gw-test-boundary"
    audio = b"ID3" + b"\xff" * 300_000
    model_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
    ).encode()
    file_part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
            "Content-Type: audio/mpeg\r\n\r\n"
        ).encode()
        + audio
        + b"\r\n"
    )
    parts = model_part + file_part if model_first else file_part + model_part
    body = parts + f"--{boundary}--\r\n".encode()
    response = httpx.post(
        gateway.url + "/v1/audio/transcriptions",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200
    assert received == [body]
    assert other.last().headers["authorization"] == "Bearer sk-key-b"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/files", "multipart/form-data; boundary=abc"),
        ("/v1/chat/completions", "application/json"),
    ],
)
def test_an_abandoned_body_is_never_forwarded_as_complete(
    relay: ServedGateway, scripted: ScriptedProvider, path: str, content_type: str
) -> None:
    """A client that declared 100,000 bytes, sent 10 and hung up: the provider gets no complete
    request, and the call is recorded as 499."""
    complete = len(scripted.requests)
    with socket.create_connection(("127.0.0.1", relay.port)) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            "Content-Length: 100000\r\nAuthorization: Bearer sk-client\r\n\r\n".encode()
            + b"0123456789"
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while metric(relay, "gateway_requests_total", status="499") < 1:
        assert time.monotonic() < deadline, "the hang-up was not recorded"
        time.sleep(0.05)
    time.sleep(0.2)
    assert len(scripted.requests) == complete  # the provider never read a whole body


def test_a_head_answer_keeps_the_providers_length(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """HEAD is answered with the headers a GET would get: the provider's content-length, no
    body."""
    got = httpx.get(relay.url + "/v1/models/m-1")
    head = httpx.head(relay.url + "/v1/models/m-1")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] != "0"
    assert scripted.last().method == "HEAD"


# ---- 5. Hang-ups and outcomes ------------------------------------------------------------------


def _slow(closed: threading.Event, *, stream: bool) -> Handler:
    """A provider that works for 4 s before answering, noting when the gateway hangs up."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        for _ in range(400):
            await asyncio.sleep(0.01)
            transport = request.transport
            if transport is None or transport.is_closing():
                closed.set()
                raise asyncio.CancelledError
        if stream:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: [DONE]\n\n")
            return response
        return web.json_response({"late": True})

    return answer


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "stream-before-first-byte"])
@pytest.mark.parametrize("server", ["gateway", "uvicorn"])
def test_a_client_that_gives_up_cancels_the_provider_request(
    make_gateway: MakeGateway,
    scripted: ScriptedProvider,
    receiver: OtlpReceiver,
    stream: bool,
    server: str,
) -> None:
    """Giving up after 1 s closes the provider connection at once and records 499: told by the
    gateway's own server protocol (`gateway.disconnect`), or, under uvicorn's protocol, seen as
    the `http.disconnect` message by a watching task."""
    scripted.handlers.clear()
    relay = make_gateway(
        own_protocol=server == "gateway",
        GATEWAY_UPSTREAM_URL=scripted.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        **FAST,
    )
    closed = threading.Event()
    scripted.handlers["/v1/chat/completions"] = _slow(closed, stream=stream)
    started = time.monotonic()
    body = orjson.dumps({"model": "slow", "messages": [], "stream": stream})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            relay.url + "/v1/chat/completions",
            content=body,
            headers={
                "content-type": "application/json",
                "x-request-id": f"hangup-{stream}-{server}",
            },
            timeout=1.0,
        )
    assert closed.wait(2.5), "the provider kept working after the client left"
    assert time.monotonic() - started < 3.0
    span = receiver.wait_for(f"hangup-{stream}-{server}")
    assert span.attributes["error.type"] == "client_closed_request"
    assert span.attributes["http.response.status_code"] == 499


def test_a_client_that_leaves_mid_stream_is_recorded_as_499(
    relay: ServedGateway, scripted: ScriptedProvider, receiver: OtlpReceiver
) -> None:
    """A hang-up after the first streamed bytes is a 499 too, with what was read so far: the
    provider bills what it generated, so its tokens are counted (estimated: no usage came)."""
    closed = _leave_mid_stream(relay, scripted, "midway", [sse(chunk("Hel", model="midway"))])
    assert closed.wait(3)
    span = receiver.wait_for("midway-1")
    assert span.attributes["error.type"] == "client_closed_request"
    assert span.attributes["gateway.usage.estimated"] is True
    assert span.attributes["gen_ai.usage.output_tokens"] == 1  # one piece of text
    assert span.attributes["gen_ai.usage.input_tokens"] > 0


def test_a_client_that_leaves_an_azure_stream_records_its_id_and_model(
    relay: ServedGateway, scripted: ScriptedProvider, receiver: OtlpReceiver
) -> None:
    """Azure's first chunk (its prompt filter results) names the id and the model empty; a
    hang-up before any finish or usage chunk still records the ones its deltas name."""
    filters = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
    events = [sse({**filters, "prompt_filter_results": []}), sse(chunk("Hel", model="azure-4o"))]
    assert _leave_mid_stream(relay, scripted, "azure", events).wait(3)
    span = receiver.wait_for("azure-1")
    assert span.attributes["gen_ai.response.id"] == "chatcmpl-r"
    assert span.attributes["gen_ai.response.model"] == "azure-4o"


def test_a_client_that_leaves_after_a_usage_that_is_not_a_count_is_recorded(
    relay: ServedGateway, scripted: ScriptedProvider, receiver: OtlpReceiver
) -> None:
    """A usage chunk whose counts are not counts ("n/a") is an unknown usage: the stream is
    read when the client leaves, and the call is recorded (499) with what was read."""
    usage = {"prompt_tokens": "n/a", "completion_tokens": [1], "total_tokens": None}
    events = [
        sse(chunk("Hel", model="notcount")),
        sse({**chunk(None, model="notcount"), "choices": [], "usage": usage}),
    ]
    assert _leave_mid_stream(relay, scripted, "notcount", events).wait(3)
    span = receiver.wait_for("notcount-1")
    assert span.attributes["http.response.status_code"] == 499
    assert span.attributes["gen_ai.response.model"] == "notcount"
    assert span.attributes["gateway.usage.estimated"] is True


def test_a_bug_in_reading_a_stream_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """`read_stream` (settle, a client that leaves) must not lose the call's record to a bug
    in reading its stream: the exception is logged with the call's request id."""

    class Broken:
        def read(self) -> None:
            raise RuntimeError("a bug")

    call = cast(Call, SimpleNamespace(tap=Broken(), request_id="broken-1"))
    read_stream(call)
    assert "reading the stream of call broken-1 failed" in caplog.text


def _leave_mid_stream(
    relay: ServedGateway, scripted: ScriptedProvider, name: str, events: list[bytes]
) -> threading.Event:
    """A provider that sends `events`, then keeps the stream open with comments; a client
    (request id `{name}-1`) that reads past the events, then leaves. Set when the provider
    saw the connection close."""
    closed = threading.Event()
    sent = sum(len(event) for event in events)

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"".join(events))
        try:
            for _ in range(400):
                await asyncio.sleep(0.01)
                await response.write(b": working\n\n")
        except ConnectionError:
            closed.set()
        return response

    scripted.handlers["/v1/chat/completions"] = answer
    with httpx.stream(
        "POST",
        relay.url + "/v1/chat/completions",
        content=stream_body(name),
        headers={"content-type": "application/json", "x-request-id": f"{name}-1"},
    ) as response:
        read = 0
        for piece in response.iter_raw():
            read += len(piece)
            if read >= sent:
                break
    return closed


@pytest.mark.parametrize("fault", ["reset", "timeout"])
def test_a_provider_that_fails_mid_stream_is_an_error(
    make_gateway: MakeGateway,
    scripted: ScriptedProvider,
    receiver: OtlpReceiver,
    fault: str,
) -> None:
    """A dropped or stalled stream is upstream_reset / upstream_timeout on the span and in the
    metrics, and the client's stream is cut rather than ended cleanly."""
    gateway = make_gateway(
        GATEWAY_UPSTREAM_URL=scripted.url,
        GATEWAY_READ_TIMEOUT="0.5",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        **FAST,
    )

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(chunk("Hel", model="broken")))
        if fault == "reset":
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
        else:
            await asyncio.sleep(3)
        return response

    scripted.handlers["/v1/chat/completions"] = answer
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            content=stream_body("broken"),
            headers={"content-type": "application/json", "x-request-id": f"broken-{fault}"},
            timeout=10,
        ) as response,
    ):
        response.read()
    span = receiver.wait_for(f"broken-{fault}")
    assert span.attributes["error.type"] == f"upstream_{fault}"
    assert metric(gateway, "gateway_upstream_errors_total", kind=fault) == 1


def test_overhead_excludes_the_wait_for_the_provider(
    relay: ServedGateway, scripted: ScriptedProvider, receiver: OtlpReceiver
) -> None:
    """A healthy 1.2 s stream records an overhead of milliseconds, not the stream's length."""

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in chat_events("paced", usage=True):
            await asyncio.sleep(0.2)
            await response.write(event)
        await response.write_eof()
        return response

    scripted.handlers["/v1/chat/completions"] = answer
    with httpx.stream(
        "POST",
        relay.url + "/v1/chat/completions",
        content=stream_body("paced"),
        headers={"content-type": "application/json", "x-request-id": "paced-1"},
    ) as response:
        response.read()
    span = receiver.wait_for("paced-1")
    assert span.attributes["gateway.overhead_ms"] < 100
    assert metric(relay, "gateway_overhead_seconds_sum") < 0.1


# ---- found by trying it as users would (second pass) -----------------------------------------


def test_a_mixed_case_boundary_is_routed_by_its_model(
    whisper_b: tuple[ServedGateway, ScriptedProvider],
) -> None:
    """Browsers write boundaries like ----WebKitFormBoundaryAbC: case matters (RFC 2046)."""
    gateway, other = whisper_b
    received: list[bytes] = []
    other.handlers["/v1/audio/transcriptions"] = _recording(received)
    boundary = "----WebKitFormBoundaryAbCxYz"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\nRIFF\r\n--{boundary}\r\n"
        f'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--{boundary}--\r\n'
    ).encode()
    response = httpx.post(
        gateway.url + "/v1/audio/transcriptions",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200 and received == [body]


def test_expect_100_continue_is_not_forwarded(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """The gateway answers Expect itself; a provider is never asked to send 100 Continue."""
    body = orjson.dumps({"model": "m", "input": "x"})
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200")
    assert "expect" not in scripted.last().headers


def test_a_retry_without_stream_options_is_valid_json_whatever_the_body(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """ "stream_options": null before other fields: the retry is the body without the field."""
    seen: list[dict[str, Any]] = []
    scripted.handlers["/v1/chat/completions"] = _strict(seen, "strict-null")
    body = b'{"model":"strict-null","stream_options":null,"stream":true,"messages":[]}'
    with httpx.stream(
        "POST",
        relay.url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    ) as response:
        assert response.status_code == 200
        response.read()
    assert len(seen) == 2 and seen[1] == {"model": "strict-null", "stream": True, "messages": []}


def test_a_chunked_json_answer_still_records_its_usage(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """A non-streamed answer sent chunked (no content-length): relayed as it comes, usage read."""
    answer = orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "chunked-json",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2000, "total_tokens": 2007},
        }
    )

    async def handler(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        for i in range(0, len(answer), 40):
            await response.write(answer[i : i + 40])
        await response.write_eof()
        return response

    scripted.handlers["/v1/chat/completions"] = handler
    response = httpx.post(
        relay.url + "/v1/chat/completions",
        content=orjson.dumps({"model": "chunked-json", "messages": []}),
        headers={"content-type": "application/json"},
    )
    assert response.json()["usage"]["completion_tokens"] == 2000
    assert metric(relay, "gateway_tokens_total", direction="output", model="chunked-json") == 2000


def test_a_client_that_leaves_after_done_is_a_complete_call(
    relay: ServedGateway, scripted: ScriptedProvider, receiver: OtlpReceiver
) -> None:
    """The SDKs stop reading at [DONE]; a provider that closes the body later is no hang-up."""
    gate = Gate()

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in chat_events("lingers", usage=True):
            await response.write(event)
        await gate.wait(3)  # keeps the body open after [DONE]
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    scripted.handlers["/v1/chat/completions"] = answer
    with httpx.stream(
        "POST",
        relay.url + "/v1/chat/completions",
        content=stream_body("lingers"),
        headers={"content-type": "application/json", "x-request-id": "lingers-1"},
    ) as response:
        for line in response.iter_lines():
            if line == "data: [DONE]":
                break
    time.sleep(0.1)
    gate.open()
    span = receiver.wait_for("lingers-1")
    assert span.attributes["http.response.status_code"] == 200
    assert "error.type" not in span.attributes


def test_several_connection_headers_all_count(
    relay: ServedGateway, scripted: ScriptedProvider
) -> None:
    """Headers named by any of several Connection headers, and Proxy-*, are dropped both ways."""

    async def answer(request: web.Request, body: bytes) -> web.Response:
        response = web.json_response({"ok": True})
        response.headers.add("Connection", "X-Named-A")
        response.headers.add("Connection", "keep-alive")
        response.headers["X-Named-A"] = "leak"
        response.headers["Proxy-Authentication-Info"] = "leak"
        return response

    scripted.handlers["/v1/hop2"] = answer
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        sock.sendall(
            b"GET /v1/hop2 HTTP/1.1\r\nHost: x\r\nConnection: X-Internal\r\n"
            b"Connection: keep-alive\r\nX-Internal: 1\r\nProxy-Foo: 1\r\n\r\n"
        )
        answer_bytes = b""
        while b"\r\n\r\n" not in answer_bytes:
            answer_bytes += sock.recv(4096)
    head = answer_bytes.split(b"\r\n\r\n")[0].lower()
    assert b"x-named-a" not in head and b"proxy-authentication-info" not in head
    seen = scripted.last().headers
    assert "x-internal" not in seen and "proxy-foo" not in seen


def test_overhead_excludes_a_slow_clients_upload(
    whisper_b: tuple[ServedGateway, ScriptedProvider],
) -> None:
    """An upload routed by its model field and sent over 0.4 s: the wait is the client's."""
    gateway, other = whisper_b
    other.handlers["/v1/audio/transcriptions"] = _recording([])
    boundary = "slowboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
        + "x" * 40_000
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
        f"whisper-1\r\n--{boundary}--\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary="
            + boundary.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        for i in range(0, len(body), 10_000):
            sock.sendall(body[i : i + 10_000])
            time.sleep(0.1)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
    head = answer.split(b"\r\n\r\n")[0].decode().lower()
    overhead = float(head.split("x-gateway-overhead-ms: ")[1].split("\r\n")[0])
    assert overhead < 100
