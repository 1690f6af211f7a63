"""Large bodies through the relay: one 16 MiB SSE event, and a 200 MiB upload, direct and via.

Uses the same set-up as bench_proxy.py (nginx as the provider on core 1, the gateway on core 0,
loopback only). It prints, direct and through the gateway:

- the time to receive one 16 MiB event of an event stream (`GET /v1/responses/{id}?stream=true`,
  an image-generation partial), median of several rounds, and the slowest `/healthz` answer of
  the gateway while those events pass (the event loop must never stall on one big event);
- the time to send a 200 MiB multipart upload (`POST /v1/files`) and get the answer, and the
  gateway's peak RSS after start-up, after the upload (streamed, never held) and after the events.

Run: python benchmarks/bench_bodies.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from bench_proxy import free_port, peak_rss_mib, start_gateway, start_nginx, wait_port

EVENT_MIB = 16
UPLOAD_MIB = 200
PIECE = 1 << 20


SINK = """
import sys
from aiohttp import web

async def files(request):
    size = 0
    async for piece in request.content.iter_any():
        size += len(piece)
    return web.json_response({"id": "file-bench", "object": "file", "bytes": size})

app = web.Application(client_max_size=0)
app.router.add_post("/v1/files", files)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def start_sink(port: int) -> subprocess.Popen[bytes]:
    """An upload sink on core 1 that reads every byte before it answers with their count."""
    proc = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", SINK, str(port)])
    wait_port(port)
    return proc


def write_event(work: Path) -> int:
    """A 16 MiB Responses stream event in nginx's folder; returns its size in bytes."""
    data = orjson.dumps(
        {
            "type": "response.image_generation_call.partial_image",
            "partial_image_b64": "QUFB" * (EVENT_MIB << 18),
        }
    )
    event = b"event: response.image_generation_call.partial_image\ndata: " + data + b"\n\n"
    (work / "events").mkdir()
    (work / "events" / "resp_big").write_bytes(event)
    return len(event)


async def fetch_event(port: int) -> float:
    """Seconds to read the whole event, one fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=64 << 20)
    start = time.perf_counter()
    writer.write(b"GET /v1/responses/resp_big?stream=true HTTP/1.1\r\nHost: b\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b"chunked" in head.lower():
        await reader.readuntil(b"\r\n0\r\n\r\n")
    else:
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


async def slowest_health(port: int, until: asyncio.Event) -> float:
    """The slowest /healthz answer, in seconds, polled every 10 ms until `until` is set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    worst = 0.0
    while not until.is_set():
        start = time.perf_counter()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        worst = max(worst, time.perf_counter() - start)
        await asyncio.sleep(0.01)
    writer.close()
    return worst


async def events_with_health(gateway: int, rounds: int) -> tuple[float, float]:
    done = asyncio.Event()
    health = asyncio.ensure_future(slowest_health(gateway, done))
    times = [await fetch_event(gateway) for _ in range(rounds)]
    done.set()
    return statistics.median(times), await health


async def upload(port: int) -> float:
    """Seconds to send a 200 MiB multipart body and read the answer."""
    boundary = b"bench-boundary"
    head = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="big.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    tail = b"\r\n--" + boundary + b"--\r\n"
    size = len(head) + (UPLOAD_MIB << 20) + len(tail)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    writer.write(
        b"POST /v1/files HTTP/1.1\r\nHost: b\r\nContent-Type: multipart/form-data; boundary="
        + boundary
        + b"\r\nContent-Length: "
        + str(size).encode()
        + b"\r\n\r\n"
        + head
    )
    piece = b"x" * PIECE
    for _ in range(UPLOAD_MIB):
        writer.write(piece)
        await writer.drain()
    writer.write(tail)
    await writer.drain()
    answer = await reader.readuntil(b"\r\n\r\n")
    length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    counted = orjson.loads(await reader.readexactly(length))["bytes"]
    elapsed = time.perf_counter() - start
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert counted == size, f"the provider got {counted} of {size} bytes"
    writer.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="event fetches per side")
    args = parser.parse_args()
    for tool in ("nginx", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install -y nginx")
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    size = write_event(work)
    upstream = free_port()
    sink_port = free_port()
    sink = start_sink(sink_port)
    nginx = start_nginx(work, upstream, sink_port)
    port = free_port()
    gateway = start_gateway(work, port, upstream, tracing=False)
    try:
        direct_upload = asyncio.run(upload(upstream))
        rss_start = peak_rss_mib(gateway.pid)
        via_upload = asyncio.run(upload(port))
        rss_upload = peak_rss_mib(gateway.pid)
        direct_event, _ = asyncio.run(events_with_health(upstream, args.rounds))
        via_event, worst = asyncio.run(events_with_health(port, args.rounds))
        rss_event = peak_rss_mib(gateway.pid)
        print(f"{'':44}{'direct':>10}{'gateway':>10}")
        print(
            f"{f'one {size / (1 << 20):.1f} MiB SSE event, median (s)':44}"
            f"{direct_event:>10.3f}{via_event:>10.3f}"
        )
        print(f"{'slowest /healthz meanwhile (ms)':44}{'':>10}{worst * 1000:>10.1f}")
        print(
            f"{f'{UPLOAD_MIB} MiB multipart upload (s)':44}"
            f"{direct_upload:>10.3f}{via_upload:>10.3f}"
        )
        print(
            f"{'gateway peak RSS (MiB): start, upload, event':44}{'':>10}"
            f"{rss_start:.1f}, {rss_upload:.1f}, {rss_event:.1f}"
        )
    finally:
        gateway.send_signal(signal.SIGINT)
        nginx.send_signal(signal.SIGQUIT)
        sink.terminate()
        gateway.wait(15)
        nginx.wait(15)
        sink.wait(15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
