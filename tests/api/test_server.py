"""Bad clients against a real `gateway serve`: slow heads and bodies, oversized heads, floods,
garbage, bursts of large bodies.

Each test talks to a gateway process over real sockets; the provider is a FakeProvider of this
module's own, so a test can assert that a refused request never reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import OpenAI

from tests.conftest import free_port
from tests.servers import FakeProvider

BINARY = Path(sys.executable).parent / "gateway"
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})


class Served:
    """`gateway serve` in a process of its own, with `env` added and optionally a lower fd limit."""

    def __init__(self, folder: Path, env: dict[str, str], nofile: int | None = None) -> None:
        self.port = free_port()
        self.log = folder / "gateway.log"

        def limit_fds() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BINARY), "serve", "--port", str(self.port)],
                cwd=folder,
                env={**os.environ, **env},
                stdout=log,
                stderr=log,
                preexec_fn=limit_fds,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200:
                    break
            except OSError:
                pass
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the gateway did not start within 30 s"
            time.sleep(0.05)

    @property
    def fds(self) -> int:
        """Open file descriptors of the gateway process (serve execs it: one pid, one worker)."""
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    @property
    def rss_kib(self) -> int:
        """Resident memory of the gateway process, KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])

    @property
    def hwm_kib(self) -> int:
        """Peak resident memory of the gateway process so far (VmHWM), KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1])

    def calls(self) -> list[dict[str, Any]]:
        """The access log's lines so far (one JSON object per finished /v1 call)."""
        found = []
        for line in self.log.read_text().splitlines():
            if '"event":"call"' in line:
                try:
                    found.append(orjson.loads(line[line.index("{") :]))
                except orjson.JSONDecodeError:  # the line being written now: read next time
                    continue
        return found

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send `data` on a new connection; read the answer until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer before reading it all
            sock.sendall(data)
        return read_answer(sock, timeout)


def read_answer(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a content-length: status, headers (lower-cased), body."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (ln.partition(":") for ln in lines[1:])
    )
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def chat_request(extra_head: bytes = b"") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n%s\r\n%s" % (len(CHAT), extra_head, CHAT)
    )


def openai_error(body: bytes) -> dict[str, Any]:
    """The `error` object of an OpenAI-shaped body, checked for its four keys."""
    error: dict[str, Any] = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def poll(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fake: FakeProvider) -> Iterator[Served]:
    """A gateway with a 1 s head deadline, a 3 s body deadline and the default head limits."""
    served = Served(
        tmp_path_factory.mktemp("server"),
        {
            "GATEWAY_UPSTREAM_URL": fake.url,
            "GATEWAY_HEADER_TIMEOUT": "1",
            "GATEWAY_BODY_TIMEOUT": "3",
        },
    )
    yield served
    served.stop()


def test_a_slow_head_gets_408_within_the_header_timeout(gateway: Served) -> None:
    """A client sending one header line every 2 s is answered 408 request_timeout after 1 s."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        sock.settimeout(2)
        for i in range(3):
            sock.sendall(b"x-slow-%d: 1\r\n" % i)
            try:
                status, headers, body = read_answer(sock, timeout=2)
                break
            except TimeoutError:
                continue
        elapsed = time.monotonic() - started
    assert status == 408 and 0.9 <= elapsed < 1.9, (status, elapsed)
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    error = openai_error(body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    assert "server.header_timeout" in error["message"]


def test_a_kept_alive_connection_waits_longer_than_the_head_deadline(
    gateway: Served, fake: FakeProvider
) -> None:
    """The head deadline starts at a request's first byte: an idle kept-alive connection and a
    slow body are not cut by it."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(chat_request())
        assert read_answer(sock)[0] == 200
        time.sleep(1.5)  # idle between requests, past the 1 s head deadline
        head, _, body = chat_request().partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n" + body[:5])
        time.sleep(1.5)  # the head is complete; the body may take its time
        sock.sendall(body[5:])
        status, _, answer = read_answer(sock)
    assert status == 200, answer


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("a 64 KiB header", b"x-big: " + b"a" * 65536 + b"\r\n"),
        ("10,000 headers", b"".join(b"x-h%d: v\r\n" % i for i in range(10_000))),
    ],
)
def test_an_oversized_head_is_431_and_never_forwarded(
    gateway: Served, fake: FakeProvider, name: str, extra: bytes
) -> None:
    """Heads past server.max_header_bytes or server.max_headers are answered 431 in OpenAI's
    shape, and the provider never sees them."""
    before = len(fake.requests)
    status, headers, body = exchange(gateway.port, chat_request(extra))
    assert status == 431, name
    assert headers["connection"] == "close"
    error = openai_error(body)
    assert (error["type"], error["code"]) == (
        "invalid_request_error",
        "request_header_fields_too_large",
    )
    assert "server.max_header" in error["message"]
    assert exchange(gateway.port, chat_request())[0] == 200  # the gateway still serves
    metrics = exchange(gateway.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")[2]
    assert b'gateway_connections_refused_total{code="request_header_fields_too_large"}' in metrics
    assert len(fake.requests) == before + 1
    assert all("x-big" not in r.headers and "x-h1" not in r.headers for r in fake.requests)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"x-endless: " + b"a" * 4096] * 10,  # one field that never ends
        [b"".join(b"x-f%d-%d: %s\r\n" % (c, i, b"v" * 60) for i in range(9)) for c in range(70)],
    ],
    ids=["one-endless-field", "many-chunks-of-fields"],
)
def test_a_head_sent_in_pieces_is_counted_across_them(
    gateway: Served, fake: FakeProvider, chunks: list[bytes]
) -> None:
    """A head arriving in many small chunks is refused once its bytes pass the limit, whether
    its last field is still open or every field is complete (fewer than 100 per chunk)."""
    before = len(fake.requests)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n")
        with contextlib.suppress(OSError):
            for chunk in chunks:
                sock.sendall(chunk)
                time.sleep(0.005)  # separate reads on the server
        status, _, body = read_answer(sock)
    assert status == 431 and openai_error(body)["code"] == "request_header_fields_too_large"
    assert len(fake.requests) == before


def test_a_head_under_the_limits_is_forwarded(gateway: Served, fake: FakeProvider) -> None:
    """A 28,000-byte head of 90 fields (under 32 KiB and 100) passes through whole."""
    big = b"".join(b"x-big%d: %s\r\n" % (i, b"a" * 7000) for i in range(4))
    extra = big + b"".join(b"x-h%d: v\r\n" % i for i in range(82))
    status, _, body = exchange(gateway.port, chat_request(extra))
    assert status == 200, body
    assert len(fake.last().headers["x-big3"]) == 7000 and fake.last().headers["x-h81"] == "v"


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET /v1/models HTTP/9.Z\r\n\r\n",
        b"G\x01T /v1/models HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # TLS to the HTTP port
    ],
    ids=["version", "method", "tls"],
)
def test_a_malformed_request_is_an_openai_shaped_400(gateway: Served, garbage: bytes) -> None:
    """Bytes that are not HTTP/1.1 get 400 invalid_http in OpenAI's shape, not plain text."""
    status, headers, body = exchange(gateway.port, garbage)
    assert status == 400 and headers["content-type"] == "application/json"
    error = openai_error(body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http")


@pytest.mark.parametrize(("nofile", "clients"), [(256, 300), (1024, 1000)])
def test_slow_clients_do_not_lock_out_a_new_client(
    tmp_path: Path, fake: FakeProvider, nofile: int, clients: int
) -> None:
    """Under a lowered fd limit, more slow clients than it allows (one header line every 2 s)
    leave room for a new client, which the SDK gets served at once; fds and RSS come back."""
    gateway = Served(
        tmp_path,
        {"GATEWAY_UPSTREAM_URL": fake.url, "GATEWAY_HEADER_TIMEOUT": "60"},
        nofile=nofile,
    )

    def client() -> OpenAI:
        url = f"http://127.0.0.1:{gateway.port}/v1"
        return OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=5)

    # The first call's connection stays in its client's pool, idle and older than every slow
    # client: the first to be closed to make room, possibly as a request goes out on it. The
    # call that must get in is a new client's, on a connection of its own.
    sdk, newcomer = client(), client()
    slow: list[socket.socket] = []
    stop = threading.Event()

    def drip() -> None:
        line = 0
        while not stop.wait(2):
            line += 1
            for sock in list(slow):
                with contextlib.suppress(OSError):  # closed to make room
                    sock.send(b"x-slow-%d: 1\r\n" % line)

    dripper = threading.Thread(target=drip, daemon=True)
    try:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
        )
        fds, rss = gateway.fds, gateway.rss_kib
        dripper.start()
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n")
            slow.append(sock)
        poll(lambda: gateway.fds >= min(clients, nofile // 2), 10, "the slow clients got in")
        started = time.monotonic()
        reply = newcomer.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "still there?"}]
        )
        assert reply.choices[0].message.content
        assert time.monotonic() - started < 2
        assert gateway.fds < nofile
        status, _, body = read_answer(slow[0])  # the oldest was closed to make room
        assert status == 503 and openai_error(body)["code"] == "too_many_connections"
        stop.set()
        dripper.join(5)
        for sock in slow:
            sock.close()
        poll(lambda: gateway.fds <= fds + 2, 10, f"fds back near {fds}, not {gateway.fds}")
        assert gateway.rss_kib - rss < 16 * 1024, (rss, gateway.rss_kib)
    finally:
        stop.set()
        for sock in slow:
            sock.close()
        sdk.close()
        newcomer.close()
        gateway.stop()


BOUNDARY = b"gatewaytestboundary"
UPLOAD = (
    b'--%s\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
    b'--%s\r\ncontent-disposition: form-data; name="file"; filename="a.jsonl"\r\n'
    b"content-type: application/octet-stream\r\n\r\n%s\r\n--%s--\r\n"
) % (BOUNDARY, BOUNDARY, b'{"a": 1}\n' * 50, BOUNDARY)


def body_head(path: bytes, length: bytes = b"content-length: 1000") -> bytes:
    """A POST head for a JSON body to the chat route, or a multipart upload to /v1/files."""
    kind = (
        b"application/json"
        if path == b"/v1/chat/completions"
        else b"multipart/form-data; boundary=" + BOUNDARY
    )
    return b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-type: %s\r\n%s\r\n\r\n" % (
        path,
        kind,
        length,
    )


def recorded(gateway: Served, request_id: str) -> dict[str, Any]:
    """The access log line of the call with this x-request-id, once it is written."""
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [c for c in gateway.calls() if c["request_id"] == request_id]
        return bool(found)

    poll(logged, 10, f"no access log line for {request_id}")
    return found[0]


@pytest.mark.parametrize("path", [b"/v1/chat/completions", b"/v1/files"], ids=["json", "upload"])
def test_a_stalled_body_gets_408_within_the_body_timeout(gateway: Served, path: bytes) -> None:
    """A body that stops after its first byte is answered 408 request_timeout once it has sent
    nothing for server.body_timeout (3 s), and the call is recorded as 408, not as a hang-up."""
    request_id = f"stalled-{path[4:8].decode()}"
    head = body_head(path).replace(b"host: t", b"host: t\r\nx-request-id: " + request_id.encode())
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        sock.sendall(head + (b"{" if path.endswith(b"completions") else UPLOAD[:10]))
        started = time.monotonic()
        status, headers, body = read_answer(sock, timeout=15)
        elapsed = time.monotonic() - started
    assert status == 408 and 2.9 <= elapsed < 8, (status, elapsed)
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    error = openai_error(body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    assert "server.body_timeout" in error["message"]
    call = recorded(gateway, request_id)
    assert (call["status"], call["error_type"]) == (408, "request_timeout")


@pytest.mark.parametrize("path", [b"/v1/chat/completions", b"/v1/files"], ids=["json", "upload"])
def test_a_slow_steady_body_is_served(gateway: Served, fake: FakeProvider, path: bytes) -> None:
    """A body whose first piece comes 1.5 s after its head and the rest in pieces 1 s apart,
    each well within the 3 s body deadline, is forwarded whole."""
    payload = CHAT if path.endswith(b"completions") else UPLOAD
    head = body_head(path, b"content-length: %d" % len(payload))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        sock.sendall(head)
        time.sleep(1.5)
        step = len(payload) // 4 + 1
        for start in range(0, len(payload), step):
            sock.sendall(payload[start : start + step])
            time.sleep(1)
        status, _, answer = read_answer(sock, timeout=15)
    # The fake provider answers the chat and 404s /files, after reading the whole upload.
    assert status == (200 if path.endswith(b"completions") else 404), answer
    assert fake.last().body == payload


@pytest.mark.parametrize(
    ("path", "chunks"),
    [
        (b"/v1/chat/completions", b"zz\r\nabc\r\n0\r\n\r\n"),
        (b"/v1/chat/completions", b'5\r\n{"mod\r\nzz\r\nabc\r\n0\r\n\r\n'),
        (b"/v1/files", b"zz\r\nabc\r\n0\r\n\r\n"),
        (b"/v1/files", b"a\r\n%s\r\nzz\r\nabc\r\n0\r\n\r\n" % UPLOAD[:10]),
    ],
    ids=["json", "json-after-a-chunk", "upload", "upload-after-a-chunk"],
)
def test_a_malformed_chunked_body_is_an_openai_shaped_400(
    gateway: Served, path: bytes, chunks: bytes
) -> None:
    """A chunked body with a chunk size that is not hex gets 400 invalid_http in OpenAI's shape,
    at once or after a valid first chunk, and the call is recorded as 400, not 499."""
    request_id = f"badchunk-{path[4:8].decode()}-{len(chunks)}"
    head = body_head(path, b"transfer-encoding: chunked\r\nx-request-id: " + request_id.encode())
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(head + chunks[:-16])
        time.sleep(0.2)  # the first chunk reaches the app before the broken one
        with contextlib.suppress(OSError):
            sock.sendall(chunks[-16:])
        status, headers, body = read_answer(sock)
    assert status == 400 and headers["content-type"] == "application/json"
    error = openai_error(body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http")
    call = recorded(gateway, request_id)
    assert (call["status"], call["error_type"]) == (400, "invalid_http")


@pytest.mark.parametrize("path", [b"/schema/nope", b"/schema/%ff", b"/schema/nope.json"])
def test_an_unknown_schema_path_is_a_json_404(gateway: Served, path: bytes) -> None:
    """Unknown paths under /schema get the JSON not_found of every other unknown path, not
    Litestar's HTML page; the schema itself is still served."""
    status, headers, body = exchange(gateway.port, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
    assert status == 404 and headers["content-type"] == "application/json", body
    error = openai_error(body)
    assert (error["type"], error["code"]) == ("invalid_request_error", "not_found")
    schema = b"GET /schema/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n"
    assert exchange(gateway.port, schema)[0] == 200


def test_a_body_deadline_shorter_than_the_head_deadline_is_kept(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """With the default 10 s head deadline and a 1 s body deadline, a stalled body is answered
    408 after about 1 s, not when the head's timer would have fired."""
    gateway = Served(tmp_path, {"GATEWAY_UPSTREAM_URL": fake.url, "GATEWAY_BODY_TIMEOUT": "1"})
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
            sock.sendall(body_head(b"/v1/chat/completions") + b"{")
            started = time.monotonic()
            status, _, body = read_answer(sock, timeout=15)
            elapsed = time.monotonic() - started
        assert status == 408 and 0.9 <= elapsed < 4, (status, elapsed)
        assert openai_error(body)["code"] == "request_timeout"
    finally:
        gateway.stop()


def test_stalled_bodies_do_not_lock_out_a_new_client(tmp_path: Path, fake: FakeProvider) -> None:
    """With server.max_connections 10, 12 connections whose bodies stall (one byte every 2 s,
    or nothing) leave room for a new client: the body stalled longest is closed for it with 503
    too_many_connections, again when the worker fills up again."""
    gateway = Served(tmp_path, {"GATEWAY_UPSTREAM_URL": fake.url, "GATEWAY_MAX_CONNECTIONS": "10"})
    stalled: list[socket.socket] = []
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(2):
            for sock in list(stalled)[::2]:
                with contextlib.suppress(OSError):
                    sock.send(b" ")

    def stall() -> None:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        sock.sendall(body_head(b"/v1/chat/completions") + b"{")
        stalled.append(sock)

    dripper = threading.Thread(target=drip, daemon=True)
    try:
        for _ in range(12):
            stall()
        dripper.start()
        time.sleep(2)  # every body has stalled past the 1 s grace at least once
        for _ in range(3):
            started = time.monotonic()
            status, _, body = exchange(gateway.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert status == 200 and time.monotonic() - started < 2, body
            stall()  # the worker is full again
            time.sleep(1.5)
        stop.set()
        codes = []
        for sock in stalled:
            with contextlib.suppress(OSError, AssertionError):
                status, _, body = read_answer(sock, timeout=0.5)
                codes.append((status, openai_error(body)["code"]))
        assert codes.count((503, "too_many_connections")) >= 3 + 2, codes  # 3 evicted, 2 refused
    finally:
        stop.set()
        for sock in stalled:
            sock.close()
        gateway.stop()


def test_a_burst_of_large_bodies_stays_within_the_buffer_budget(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """100 concurrent chunked bodies of 10 MiB + 1 byte, each read up to server.max_body_bytes,
    hold at most server.max_buffered_bytes (64 MiB here) at once: the others get 503 server_busy
    with retry-after, peak RSS grows by far less than the 1 GB they would hold, and every byte
    of the budget is given back."""
    gateway = Served(
        tmp_path,
        {"GATEWAY_UPSTREAM_URL": fake.url, "GATEWAY_MAX_BUFFERED_BYTES": str(64 << 20)},
    )
    answers: list[tuple[int, dict[str, str], bytes]] = []
    piece = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    head = body_head(b"/v1/chat/completions", b"transfer-encoding: chunked")

    def client() -> None:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(head)
                for _ in range(160):  # 10 MiB, unless answered before
                    if select.select([sock], [], [], 0)[0]:
                        break
                    sock.sendall(piece)
                else:
                    sock.sendall(b"1\r\na\r\n0\r\n\r\n")
            answers.append(read_answer(sock, timeout=60))

    try:
        assert exchange(gateway.port, chat_request())[0] == 200
        hwm = gateway.hwm_kib
        clients = [threading.Thread(target=client) for _ in range(100)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
        statuses = sorted({status for status, _, _ in answers})
        assert len(answers) == 100 and statuses == [413, 503], statuses
        _, headers, body = next(a for a in answers if a[0] == 503)
        assert headers["retry-after"] == "1"
        error = openai_error(body)
        assert (error["type"], error["code"]) == ("server_error", "server_busy")
        assert "server.max_buffered_bytes" in error["message"]
        growth = gateway.hwm_kib - hwm
        assert growth < 256 * 1024, f"peak RSS grew {growth} KiB"

        def released() -> bool:
            metrics = exchange(gateway.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")[2]
            return b"\ngateway_buffered_body_bytes 0\n" in metrics

        poll(released, 10, "the budget was not given back")
        assert exchange(gateway.port, chat_request())[0] == 200
    finally:
        gateway.stop()


async def test_a_shutdown_step_that_never_ends_is_abandoned_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The app's shutdown waits a bounded time for each step (a store that never answers must not
    keep the process alive past its SIGTERM), and names the step it gave up on."""
    from gateway.api import app as app_module

    monkeypatch.setattr(app_module, "SHUTDOWN_STEP_SECONDS", 0.05)
    never = asyncio.Event()
    with caplog.at_level("ERROR", logger="gateway"):
        await app_module._bounded("closing the store", never.wait())
    assert "shutdown: closing the store did not finish within 0.05 s; going on" in caplog.text
