"""The floor: a bare forwarder on the gateway's stack (../shared/perf/FLOOR.md).

A Litestar app (one raw ASGI mount at /v1, as the gateway's own proxy is mounted) under uvicorn
with uvloop and httptools, one worker, one `aiohttp.ClientSession`. Per call it reads the body,
parses it with orjson to see `stream`, forwards it with the client's headers, and sends the answer
back: whole when the provider gave a length, chunk by chunk otherwise. No prompts, no telemetry,
no limits: what the gateway is compared with in `bench_proxy.py` (issue 15).

Run: python benchmarks/bare_forwarder.py --port 8100 --upstream http://127.0.0.1:8080/v1
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import orjson
import uvicorn
from litestar import Litestar, asgi

_HOP = frozenset({b"host", b"connection", b"content-length", b"transfer-encoding", b"keep-alive"})


def create_app(upstream: str, stream_upstream: str | None = None) -> Litestar:
    """`stream_upstream`: where calls with `"stream": true` go (the mock's SSE location)."""
    session: aiohttp.ClientSession | None = None

    @asgi("/v1", is_mount=True, copy_scope=False)
    async def forward(scope: Any, receive: Any, send: Any) -> None:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=0),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        stream = bool(body) and orjson.loads(body).get("stream") is True
        headers = [
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"] if n not in _HOP
        ]
        path = scope["raw_path"].decode("latin-1").removeprefix("/v1")
        base = stream_upstream if stream and stream_upstream else upstream
        async with session.request(
            scope["method"], base + path, headers=headers, data=body
        ) as response:
            out = [
                (n.lower(), v)
                for n, v in response.raw_headers
                if n.lower() not in _HOP and n.lower() not in (b"date", b"server")
            ]
            if response.content_length is not None and not stream:
                data = await response.read()
                out.append((b"content-length", str(len(data)).encode()))
                await send(
                    {"type": "http.response.start", "status": response.status, "headers": out}
                )
                await send({"type": "http.response.body", "body": data})
                return
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            while chunk := await response.content.readany():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def close() -> None:
        if session is not None:
            await session.close()

    return Litestar(route_handlers=[forward], on_shutdown=[close])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the provider's base URL, with /v1")
    parser.add_argument("--stream-upstream", help="the base URL for streamed calls")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream.rstrip("/"), (args.stream_upstream or "").rstrip("/") or None),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
