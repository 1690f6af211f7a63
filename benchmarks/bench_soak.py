"""Soak and burst: the gateway held at 80% of one core's capacity for minutes, and hit by a burst
of oversized bodies; memory, tail latency and errors over time.

Same set-up as bench_proxy.py, on loopback only: nginx as the provider and wrk on core 1, the
gateway (`gateway serve`, one worker, SQLite, the shipped prompts, every call managed) on core 0.

Soak: the capacity C is measured first (wrk, 64 connections, 10 s); then wrk runs one minute at a
time at 0.8 C for `--minutes`. wrk has no fixed-rate mode, so each of its 256 connections waits a
fixed delay between requests (its Lua `delay()`), calibrated in short runs until the rate is
within 3% of the target. Each minute prints requests/s, p50 and p99 latency, non-2xx responses
and socket errors, and the gateway's RSS; the end prints RSS at start, end and peak (VmHWM).

Burst (`--burst`): 100 concurrent POSTs of 10 MiB + 1 byte (one over server.max_body_bytes), with
a Content-Length and then chunked (no length: the gateway must stop reading at the limit), from
httpx; RSS and open file descriptors before, right after, and 3 s after each burst.

Run: python benchmarks/bench_soak.py [--minutes 10]
     python benchmarks/bench_soak.py --burst
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
from bench_proxy import (
    PROMPT_BODY,
    free_port,
    peak_rss_mib,
    require_tools,
    start_gateway,
    start_nginx,
    wrk,
)

CONNECTIONS = 256


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def paced(
    work: Path, url: str, delay_ms: int, seconds: int, connections: int = CONNECTIONS
) -> dict[str, float]:
    """wrk with each connection waiting `delay_ms` before each request."""
    return wrk(work, url, PROMPT_BODY, connections, seconds, delay_ms=delay_ms)


def calibrate(work: Path, url: str, target: float) -> int:
    """The per-connection delay (ms) that holds wrk's rate within 3% of `target` requests/s."""
    low, high = 0, 2000
    delay = max(int(CONNECTIONS / target * 1000) - 1, 0)
    for _ in range(8):
        rate = paced(work, url, delay, 5)["rps"]
        print(f"  calibrating: delay {delay} ms -> {rate:,.0f} req/s", flush=True)
        if abs(rate / target - 1) <= 0.03:
            break
        if rate > target:
            low = delay + 1
        else:
            high = delay - 1
        delay = max(low, min(high, round(delay * rate / target)))
        if low > high:
            break
    return delay


def soak(work: Path, url: str, pid: int, minutes: int) -> None:
    wrk(work, url, PROMPT_BODY, 16, 3)  # warm up
    capacity = wrk(work, url, PROMPT_BODY, 64, 10)["rps"]
    target = 0.8 * capacity
    print(f"capacity {capacity:,.0f} req/s at 64 connections; target 80%: {target:,.0f} req/s")
    delay = calibrate(work, url, target)
    start_rss = rss_mib(pid)
    print(
        f"\nsoak: {CONNECTIONS} connections, {delay} ms between requests, RSS {start_rss:.1f} MiB"
    )
    print(f"{'minute':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} {'RSS MiB':>8}")
    total = errors = 0
    for minute in range(1, minutes + 1):
        row = paced(work, url, delay, 60)
        total += int(row["total"])
        errors += int(row["errors"] + row["socket_errors"])
        print(
            f"{minute:>6} {row['rps']:>8,.0f} {row['p50']:>7.2f} {row['p99']:>7.2f} "
            f"{int(row['errors'] + row['socket_errors']):>7} {rss_mib(pid):>8.1f}",
            flush=True,
        )
    print(
        f"\n{total:,} requests, {errors} errors; RSS start {start_rss:.1f} MiB, "
        f"end {rss_mib(pid):.1f} MiB, peak {peak_rss_mib(pid):.1f} MiB"
    )


async def burst(port: int, pid: int) -> None:
    limit = 10 * 1024 * 1024
    head = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
    tail = b'"}]}'
    body = head + b"a" * (limit + 1 - len(head) - len(tail)) + tail

    async def chunks() -> collections.abc.AsyncIterator[bytes]:
        for at in range(0, len(body), 65536):
            yield body[at : at + 65536]

    print(f"{'burst':>16} {'statuses':>12} {'RSS before/after/+3 s (MiB)':>30} {'fds':>14}")

    async def one(client: httpx.AsyncClient, kind: str) -> int:
        content = body if kind == "content-length" else chunks()
        try:
            answer = await client.post("/v1/chat/completions", content=content)
        except httpx.HTTPError as exc:
            return -len(type(exc).__name__)
        return answer.status_code

    limits = httpx.Limits(max_connections=200)
    for kind in ("content-length", "chunked"):
        before = rss_mib(pid), open_fds(pid)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits
        ) as client:
            statuses = collections.Counter(
                await asyncio.gather(*(one(client, kind) for _ in range(100)))
            )
            after = rss_mib(pid), open_fds(pid)
        await asyncio.sleep(3)  # the client's connections closed: the gateway's fds too
        later = rss_mib(pid), open_fds(pid)
        shown = ",".join(f"{k}x{v}" for k, v in sorted(statuses.items()))
        print(
            f"{kind:>16} {shown:>12} "
            f"{before[0]:>10.1f}/{after[0]:.1f}/{later[0]:.1f}"
            f"{before[1]:>9}/{after[1]}/{later[1]}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="length of the soak")
    parser.add_argument("--burst", action="store_true", help="the oversized-body burst instead")
    args = parser.parse_args()
    require_tools()
    work = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    upstream = free_port()
    nginx = start_nginx(work, upstream)
    port = free_port()
    gateway = start_gateway(work, port, upstream)
    try:
        time.sleep(1)
        if args.burst:
            asyncio.run(burst(port, gateway.pid))
        else:
            soak(work, f"http://127.0.0.1:{port}/v1/chat/completions", gateway.pid, args.minutes)
    finally:
        gateway.send_signal(signal.SIGINT)
        nginx.send_signal(signal.SIGQUIT)
        gateway.wait(15)
        nginx.wait(15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
