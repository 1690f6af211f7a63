"""The gateway's HTTP/1.1 client against scripted providers: real sockets on loopback, each
provider a raw asyncio server that answers with exactly the bytes a test gives it."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.errors import UpstreamReset, UpstreamTimeout, UpstreamUnreachable
from gateway.settings import UpstreamSettings
from gateway.upstream import pool
from gateway.upstream.client import HttpUpstream, request_head
from gateway.upstream.connection import HIGH_WATER, MAX_HEAD
from gateway.upstream.routing import Provider

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
JSON = [("content-type", "application/json")]


@dataclass
class Exchange:
    """One request as the provider read it, and the number of the connection it came on."""

    connection: int
    head: bytes
    body: bytes


Script = Callable[
    ["ScriptedServer", int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]


@dataclass
class ScriptedServer:
    """A raw HTTP/1.1 server that runs `script` on each connection (with its number, from 1)."""

    script: Script
    seen: list[Exchange] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    provider: Provider = field(init=False)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if ssl_context else "http"
        host = "localhost" if ssl_context else "127.0.0.1"
        self.provider = Provider("scripted", f"{scheme}://{host}:{port}/v1")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(self, self.connections, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def answer(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> Exchange:
        """Read the next request on a connection and write `data` back."""
        exchange = await self.read_request(number, reader)
        writer.write(data)
        await writer.drain()
        return exchange

    async def read_request(self, number: int, reader: asyncio.StreamReader) -> Exchange:
        """The next request on a connection, its body read by its length or its chunks."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().split("\r\n")
        length = next((int(x.split(":")[1]) for x in lines if x.startswith("content-length:")), 0)
        body = b""
        if "transfer-encoding: chunked" in lines:
            while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readexactly(2)
        else:
            body = await reader.readexactly(length)
        exchange = Exchange(number, head, body)
        self.seen.append(exchange)
        return exchange


Start = Callable[..., Awaitable[ScriptedServer]]


@pytest.fixture
async def scripted() -> AsyncIterator[Start]:
    servers: list[ScriptedServer] = []

    async def start(script: Script, ssl_context: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(script)
        servers.append(server)
        await server.start(ssl_context)
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()
        await server.server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[HttpUpstream]:
    upstream = HttpUpstream(UpstreamSettings(connect_timeout=2, read_timeout=2, total_timeout=5))
    yield upstream
    await upstream.close()
    await asyncio.sleep(0)  # let the closed transports finish


def answering(*answers: bytes) -> Script:
    """A script that reads each request on a connection and answers the next of `answers`
    (the last one again when they run out)."""

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for turn in range(1_000):
            await s.answer(number, reader, writer, answers[min(turn, len(answers) - 1)])

    return script


def answering_once(answer: bytes) -> Script:
    """A script that reads one request, answers `answer` and closes the connection."""

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await s.answer(number, reader, writer, answer)

    return script


async def call(client: HttpUpstream, provider: Provider, method: str = "POST") -> bytes:
    response = await client.send(provider, method, "/chat/completions", JSON, b'{"a":1}')
    try:
        return await response.read()
    finally:
        await response.close()


async def test_one_connection_carries_call_after_call(
    scripted: Start, client: HttpUpstream
) -> None:
    """An answer read to its end leaves its connection for the next call; the request goes out
    with the base URL's path, the provider's Host and the body's length."""
    server = await scripted(answering(OK))
    for _ in range(3):
        response = await client.send(server.provider, "POST", "/chat/completions?x=1", JSON, b"{}")
        assert (response.status, response.length) == (200, 11)
        assert (b"content-type", b"application/json") in response.headers
        assert await response.read() == b'{"ok":true}'
        await response.close()
    assert server.connections == 1 and len(server.seen) == 3
    host = server.provider.authority.encode()
    assert server.seen[0].head.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert b"\r\nhost: " + host + b"\r\n" in server.seen[0].head
    assert b"\r\ncontent-length: 2\r\n" in server.seen[0].head and server.seen[0].body == b"{}"


async def test_a_post_without_a_body_says_its_length_is_zero(
    scripted: Start, client: HttpUpstream
) -> None:
    server = await scripted(answering(OK))
    for method in ("POST", "GET", "DELETE"):
        response = await client.send(server.provider, method, "/files", [], None)
        await response.read()
        await response.close()
    heads = [e.head for e in server.seen]
    assert b"content-length: 0\r\n" in heads[0]
    assert b"content-length" not in heads[1] and b"content-length" not in heads[2]


async def test_a_reused_connection_the_provider_closed_is_sent_again(
    scripted: Start, client: HttpUpstream
) -> None:
    """The provider closes an idle connection as the next request goes out (it read nothing of
    it): the request is sent again on a new connection, once, and answered."""

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await s.answer(number, reader, writer, OK)
        if number == 1:
            await reader.readuntil(b"\r\n\r\n")  # the second request: closed without an answer
            return
        await reader.read()

    server = await scripted(script)
    assert await call(client, server.provider) == b'{"ok":true}'
    assert await call(client, server.provider) == b'{"ok":true}'
    assert server.connections == 2


async def test_a_new_connection_closed_unanswered_is_a_502(
    scripted: Start, client: HttpUpstream
) -> None:
    """Without a reused connection to blame, a close before any answer is the provider's: 502,
    and the request is not sent twice."""

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await s.read_request(number, reader)

    server = await scripted(script)
    with pytest.raises(UpstreamReset, match="did not answer: the connection closed"):
        await call(client, server.provider)
    assert len(server.seen) == 1


@pytest.mark.parametrize(("method", "sent"), [("POST", 1), ("GET", 2)])
async def test_a_provider_that_drops_a_request_it_worked_on_is_not_asked_twice(
    scripted: Start, client: HttpUpstream, method: str, sent: int
) -> None:
    """A reused connection closed well after the request went out (the provider read it and
    failed) is a 502 for a POST, which is never sent twice; a GET may be repeated."""

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await s.answer(number, reader, writer, OK)
        if number == 1:
            await s.read_request(number, reader)
            await asyncio.sleep(0.3)  # works on it, then drops the connection
            return
        await reader.read()

    server = await scripted(script)
    await call(client, server.provider, method)
    if sent == 1:
        with pytest.raises(UpstreamReset, match="did not answer"):
            await call(client, server.provider, method)
    else:
        assert await call(client, server.provider, method) == b'{"ok":true}'
    assert len(server.seen) == 1 + sent


async def test_an_answer_without_length_ends_with_the_connection(
    scripted: Start, client: HttpUpstream
) -> None:
    ended_by_close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nno length"
    server = await scripted(answering_once(ended_by_close))
    response = await client.send(server.provider, "GET", "/models", [], None)
    assert response.length is None and (b"connection", b"close") not in response.headers
    assert await response.read() == b"no length"
    await response.close()


async def test_interim_answers_are_skipped(scripted: Start, client: HttpUpstream) -> None:
    server = await scripted(answering(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    assert await call(client, server.provider) == b'{"ok":true}'
    assert await call(client, server.provider) == b'{"ok":true}'


async def test_a_head_answer_ends_with_its_headers(scripted: Start, client: HttpUpstream) -> None:
    """HEAD's answer announces a length it never sends: read as empty at once, and its
    connection not reused (the next call gets a new one)."""
    server = await scripted(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"))
    response = await client.send(server.provider, "HEAD", "/files/f1", [], None)
    assert (response.status, response.length) == (200, 100)
    assert await asyncio.wait_for(response.read(), 1) == b""
    await response.close()
    await call(client, server.provider, "HEAD")
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "an invalid answer"),
        (b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (MAX_HEAD + 1) + b"\r\n\r\n", "headers passed"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
            "switched protocols",
        ),
    ],
    ids=["not-http", "huge-head", "upgrade"],
)
async def test_an_answer_that_is_not_http_is_a_502(
    scripted: Start, client: HttpUpstream, answer: bytes, reason: str
) -> None:
    server = await scripted(answering(answer))
    with pytest.raises(UpstreamReset, match=reason):
        await call(client, server.provider)


async def test_an_endless_head_is_cut_at_its_limit(scripted: Start, client: HttpUpstream) -> None:
    """A header line that never ends is refused once MAX_HEAD bytes of it arrived, not held
    (and re-read) until a timeout."""

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await s.read_request(number, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        for _ in range(1_000):
            writer.write(b"a" * 4096)
            await writer.drain()
            await asyncio.sleep(0.001)

    server = await scripted(script)
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamReset, match=f"headers passed {MAX_HEAD} bytes"):
        await call(client, server.provider)
    assert asyncio.get_running_loop().time() - started < 1


async def test_a_second_answer_after_the_first_changes_nothing(
    scripted: Start, client: HttpUpstream
) -> None:
    """Bytes after a complete answer (here a whole second answer in the same write) are not
    read into it, and the connection is not used again."""
    second = b"HTTP/1.1 201 Created\r\nx-evil: 1\r\ncontent-length: 4\r\n\r\nevil"
    server = await scripted(answering(OK + second))
    response = await client.send(server.provider, "POST", "/chat/completions", JSON, b"{}")
    assert response.status == 200 and (b"x-evil", b"1") not in response.headers
    assert await response.read() == b'{"ok":true}'
    await response.close()
    await call(client, server.provider)
    assert server.connections == 2


async def test_a_body_cut_short_is_a_reset(scripted: Start, client: HttpUpstream) -> None:
    server = await scripted(answering_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf."))
    with pytest.raises(UpstreamReset, match="broke off its answer"):
        await call(client, server.provider)


async def test_past_the_pool_size_a_call_waits_for_a_free_connection(
    scripted: Start,
) -> None:
    """pool_size bounds open connections: a call past it waits for one to be released (longer
    than the connect timeout, which is for opening one) and takes it; one still waiting at its
    own deadline (upstream.total_timeout) is a 504 that names pool_size."""
    server = await scripted(answering(OK))
    client = HttpUpstream(UpstreamSettings(connect_timeout=0.1, total_timeout=1, pool_size=1))
    try:
        held = await client.send(server.provider, "POST", "/chat/completions", JSON, b"{}")
        waiting = asyncio.create_task(call(client, server.provider))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await held.read()
        await held.close()
        assert await waiting == b'{"ok":true}'
        assert server.connections == 1
        held = await client.send(server.provider, "POST", "/chat/completions", JSON, b"{}")
        with pytest.raises(UpstreamTimeout, match=r"upstream.pool_size stayed busy"):
            await call(client, server.provider)
        await held.close()
    finally:
        await client.close()


async def test_calls_past_the_pool_size_are_served_in_order(scripted: Start) -> None:
    """A call that arrives just as a connection comes free waits behind the call that was
    already queued for it, rather than taking it first."""
    server = await scripted(answering(OK))
    client = HttpUpstream(UpstreamSettings(pool_size=1))
    try:
        held = await client.send(server.provider, "POST", "/chat/completions", JSON, b"{}")
        first = asyncio.create_task(call(client, server.provider))
        await asyncio.sleep(0.05)  # queued
        await held.read()
        await held.close()
        assert await call(client, server.provider) == b'{"ok":true}'  # the newcomer, at once
        assert first.done(), "the newcomer was served before the call queued first"
        assert first.result() == b'{"ok":true}'
        assert server.connections == 1
    finally:
        await client.close()


async def test_a_slow_reader_leaves_the_rest_with_the_provider(
    scripted: Start, client: HttpUpstream
) -> None:
    """A stream read slowly (a slow client downstream) is not held in memory: the socket is
    paused past HIGH_WATER bytes, and the read timeout does not blame the provider for the
    reader's own pauses."""
    piece = b"x" * 16_384
    pieces = 256  # 4 MiB

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await s.read_request(number, reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(pieces):
            writer.write(b"4000\r\n" + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server = await scripted(script)
    slow = HttpUpstream(UpstreamSettings(read_timeout=0.2))
    try:
        response = await slow.send(server.provider, "GET", "/big", [], None)
        assert response.length is None
        largest = total = 0
        while chunk := await response.next_chunk():
            largest, total = max(largest, len(chunk)), total + len(chunk)
            if total < 300_000:
                await asyncio.sleep(0.3)  # longer than the read timeout, with bytes waiting
        await response.close()
    finally:
        await slow.close()
    assert total == len(piece) * pieces
    assert largest <= HIGH_WATER + 300_000, largest  # one socket read past the mark at most


async def test_a_provider_silent_past_the_read_timeout_is_a_504(scripted: Start) -> None:
    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await s.answer(
            number,
            reader,
            writer,
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        await reader.read()

    server = await scripted(script)
    client = HttpUpstream(UpstreamSettings(read_timeout=0.2))
    try:
        response = await client.send(server.provider, "GET", "/stream", [], None)
        assert await response.next_chunk() == b"hello"
        with pytest.raises(UpstreamTimeout, match=r"read_timeout \(0.2 s\)"):
            await response.next_chunk()
        await response.close()
    finally:
        await client.close()


async def test_idle_connections_close_after_the_keepalive(
    scripted: Start, client: HttpUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each idle connection is closed KEEPALIVE seconds after it went idle: the second of two,
    released half a KEEPALIVE after the first, is not left for another whole period."""
    loop = asyncio.get_running_loop()
    closed: dict[int, float] = {}
    both = asyncio.Event()

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await s.answer(number, reader, writer, OK)
        await reader.read()  # until the client closes it
        closed[number] = loop.time()
        if len(closed) == 2:
            both.set()

    monkeypatch.setattr(pool, "KEEPALIVE", 1.0)
    server = await scripted(script)
    first, second = [
        await client.send(server.provider, "POST", "/chat/completions", JSON, b"{}")
        for _ in range(2)
    ]
    for response in (first, second):
        await response.read()
    await first.close()
    await asyncio.sleep(0.5)
    await second.close()
    idle = loop.time()
    await asyncio.wait_for(both.wait(), 3)
    assert 0.9 < closed[2] - idle < 1.3


async def test_idle_connections_the_provider_closes_are_forgotten(
    scripted: Start, client: HttpUpstream
) -> None:
    server = await scripted(answering_once(OK))
    await call(client, server.provider)
    await asyncio.sleep(0.1)
    assert client._pool._open == 0 and not any(client._pool._idle.values())
    await call(client, server.provider)
    assert server.connections == 2 and len(server.seen) == 2


async def test_uploads_stream_chunked_or_at_their_declared_length(
    scripted: Start, client: HttpUpstream
) -> None:
    server = await scripted(answering(OK))

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"abc", b"", b"defg"):
            yield part

    response = await client.send(server.provider, "POST", "/files", [], parts())
    await response.read()
    await response.close()
    declared = [("content-length", "7")]
    response = await client.send(server.provider, "POST", "/files", declared, parts())
    await response.read()
    await response.close()
    assert [e.body for e in server.seen] == [b"abcdefg", b"abcdefg"]
    assert b"transfer-encoding: chunked\r\n" in server.seen[0].head
    assert b"transfer-encoding" not in server.seen[1].head


async def test_an_upload_slower_than_the_read_timeout_is_not_cut(scripted: Start) -> None:
    """The read timeout counts from the end of the request: an upload that takes longer than
    it (a slow client) is the gateway's sending, not the provider's silence."""
    server = await scripted(answering(OK))
    client = HttpUpstream(UpstreamSettings(read_timeout=0.2))

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(5):
            await asyncio.sleep(0.1)
            yield b"part"

    try:
        response = await client.send(server.provider, "POST", "/files", [], slow())
        assert await response.read() == b'{"ok":true}'
        await response.close()
    finally:
        await client.close()
    assert server.seen[0].body == b"part" * 5


async def test_an_upload_goes_out_on_a_new_connection(
    scripted: Start, client: HttpUpstream
) -> None:
    """A pooled connection could be closed by the provider as an upload starts on it, and a
    streamed body cannot be sent again: uploads take a new connection."""
    server = await scripted(answering(OK))
    await call(client, server.provider)

    async def parts() -> AsyncIterator[bytes]:
        yield b"abc"

    response = await client.send(server.provider, "POST", "/files", [], parts())
    await response.read()
    await response.close()
    assert [e.connection for e in server.seen] == [1, 2]


async def test_an_upload_that_breaks_off_never_looks_complete(
    scripted: Start, client: HttpUpstream
) -> None:
    """What stops an upload is what `send` raises; the provider's connection is cut before the
    chunked terminator."""
    cut = asyncio.Event()

    async def script(
        s: ScriptedServer, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await s.read_request(number, reader)
        except asyncio.IncompleteReadError:
            cut.set()

    server = await scripted(script)

    async def parts() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ValueError("the client sent too much")

    with pytest.raises(ValueError, match="too much"):
        await client.send(server.provider, "POST", "/files", [], parts())
    await asyncio.wait_for(cut.wait(), 2)
    assert server.seen == []


def test_a_line_break_in_a_header_is_refused() -> None:
    """No header (a configured key with a newline) may add a line of its own to the request."""
    provider = Provider("p", "http://h/v1")
    assert request_head("GET", provider, "/m", [("a", "b")], "\r\n") == (
        b"GET /v1/m HTTP/1.1\r\nhost: h\r\na: b\r\n\r\n"
    )
    for value in ("x\r\nevil: 1", "x\nevil: 1", "x\revil: 1"):
        with pytest.raises(ValueError, match="line break"):
            request_head("GET", provider, "/m", [("authorization", value)], "\r\n")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` and its key (PEM files), made by openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_providers_are_verified(
    scripted: Start, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS with the system's verification: a certificate the trust store holds is accepted
    (SSL_CERT_FILE names it here), one it does not is a 502 naming the failure."""
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    server = await scripted(answering(OK), served)
    untrusting = HttpUpstream(UpstreamSettings())
    try:
        with pytest.raises(UpstreamUnreachable, match="cannot connect"):
            await call(untrusting, server.provider)
    finally:
        await untrusting.close()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusting = HttpUpstream(UpstreamSettings())
    try:
        assert await call(trusting, server.provider) == b'{"ok":true}'
        assert await call(trusting, server.provider) == b'{"ok":true}'
    finally:
        await trusting.close()
    # The refused handshake never reached the server's handler; one connection carried both.
    assert server.connections == 1 and len(server.seen) == 2
