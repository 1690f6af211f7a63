"""The provider client alone: CPU per request of aiohttp's ClientSession and of the gateway's own
HTTP/1.1 client (`gateway.upstream.client.HttpUpstream`), in the same process, same load.

nginx on core 1 answers a static chat completion (bench_proxy.py's); this process, pinned to
core 0, runs 64 tasks posting the same 70-byte body and reading each answer whole, for
`--requests` requests per round, each client in turn for `--rounds` rounds. CPU time of this
process only (the client's side: request building, socket writes and reads, answer parsing).

Needs nginx. Run: python benchmarks/bench_upstream.py [--requests 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop
from bench_proxy import free_port, start_nginx

from gateway.settings import UpstreamSettings
from gateway.upstream.client import HttpUpstream
from gateway.upstream.routing import Provider

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
HEADERS = [("content-type", "application/json"), ("authorization", "Bearer sk-bench")]
TASKS = 64


async def cpu_per_request(one: Callable[[], Awaitable[bytes]], requests: int) -> float:
    """µs of this process's CPU per request, `TASKS` requests in flight."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(worker(50) for _ in range(TASKS)))  # warm: connections, caches
    started = time.process_time()
    await asyncio.gather(*(worker(requests // TASKS) for _ in range(TASKS)))
    return (time.process_time() - started) / (requests // TASKS * TASKS) * 1e6


async def with_aiohttp(base: str, requests: int) -> float:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, limit_per_host=0),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    ) as session:
        url = base + "/chat/completions"

        async def one() -> bytes:
            headers = [(n, v) for n, v in HEADERS] + [("content-length", str(len(BODY)))]
            async with session.request("POST", url, headers=headers, data=BODY) as response:
                return await response.read()

        return await cpu_per_request(one, requests)


async def with_gateway_client(base: str, requests: int) -> float:
    client = HttpUpstream(UpstreamSettings())
    provider = Provider("nginx", base)

    async def one() -> bytes:
        response = await client.send(provider, "POST", "/chat/completions", HEADERS, BODY)
        try:
            return await response.read()
        finally:
            await response.close()

    try:
        return await cpu_per_request(one, requests)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    port = free_port()
    nginx = start_nginx(work, port)
    os.sched_setaffinity(0, {0})
    base = f"http://127.0.0.1:{port}/v1"
    results: dict[str, list[float]] = {"aiohttp ClientSession": [], "gateway HttpUpstream": []}
    try:
        for _ in range(args.rounds):
            results["aiohttp ClientSession"].append(uvloop.run(with_aiohttp(base, args.requests)))
            results["gateway HttpUpstream"].append(
                uvloop.run(with_gateway_client(base, args.requests))
            )
    finally:
        nginx.terminate()
        nginx.wait(10)
    for name, rounds in results.items():
        shown = " / ".join(f"{r:.1f}" for r in rounds)
        print(f"{name:>22}: {statistics.median(rounds):6.1f} µs CPU per request ({shown})")


if __name__ == "__main__":
    main()
