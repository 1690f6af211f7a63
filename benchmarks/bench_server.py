"""Cost of the server's protocol per request: uvicorn's HttpToolsProtocol against GatewayProtocol.

No sockets and no provider: one kept-alive connection with an in-memory transport, a trivial ASGI
app answering 200, and the request head the OpenAI Python SDK sends (16 fields) with a small chat
body. What differs between the two rows is only what GatewayProtocol adds per request: the head
timer armed and cancelled, the byte and field counts, the idle-connection bookkeeping. Rounds
alternate between the two classes so drift in the machine's speed falls on both alike.

Run: taskset -c 0 python benchmarks/bench_server.py [--requests 50000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.api.server import ServerLimits, protocol_factory

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Where is my order?"}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8080\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\n"
    b"Accept: application/json\r\n"
    b"Content-Type: application/json\r\n"
    b"User-Agent: OpenAI/Python 1.54.0\r\n"
    b"X-Stainless-Lang: python\r\n"
    b"X-Stainless-Package-Version: 1.54.0\r\n"
    b"X-Stainless-OS: Linux\r\n"
    b"X-Stainless-Arch: x64\r\n"
    b"X-Stainless-Runtime: CPython\r\n"
    b"X-Stainless-Runtime-Version: 3.11.7\r\n"
    b"Authorization: Bearer sk-0123456789abcdef0123456789abcdef\r\n"
    b"X-Stainless-Async: false\r\n"
    b"X-Stainless-Retry-Count: 0\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


class Transport(asyncio.Transport):
    """Counts writes; a response is its head and its body, two writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.answered = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.writes % 2 == 0:
            self.answered.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name in ("sockname", "peername") else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def per_request(factory: Any, requests: int) -> float:
    """Microseconds per request on one kept-alive connection."""
    config = Config(app, lifespan="off", log_level="warning", access_log=False)
    protocol = factory(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    started = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await transport.answered.wait()
        transport.answered.clear()
    elapsed = time.perf_counter() - started
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rows: dict[str, Any] = {
        "uvicorn HttpToolsProtocol": HttpToolsProtocol,
        "GatewayProtocol": protocol_factory(ServerLimits()),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    loop = uvloop.new_event_loop()
    for _ in range(args.rounds):
        for name, factory in rows.items():
            times[name].append(loop.run_until_complete(per_request(factory, args.requests)))
    loop.close()
    base = statistics.median(times["uvicorn HttpToolsProtocol"])
    for name, found in times.items():
        median = statistics.median(found)
        print(
            f"{name:28} median {median:6.2f} µs/request  (min {min(found):.2f}, "
            f"max {max(found):.2f})  {median - base:+.2f} µs"
        )


if __name__ == "__main__":
    main()
