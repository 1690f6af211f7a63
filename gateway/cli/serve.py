"""`gateway serve`: run the gateway (uvicorn workers on the app factory, gateway.api.server).

Always local: it serves this machine's config and store. A gateway URL (`--url`, GATEWAY_URL)
only points the registry commands at another gateway, so it is ignored here.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.runtime import JsonFlag, err, failures, runtime
from gateway.core.redaction import redact
from gateway.errors import InvalidRequest


def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Interface (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8080).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the gateway: the OpenAI-compatible proxy on /v1, /admin, /healthz and /readyz."""
    with failures(as_json):
        settings = runtime.settings  # validate the config before any worker starts
    server = settings.server
    chosen_host, chosen_port = host or server.host, port or server.port
    with failures(as_json):
        check_free(chosen_host, chosen_port)
    err.print(
        f"Prompt Gateway on http://{chosen_host}:{chosen_port}/v1 "
        f"(environment {settings.env}, store {redact(settings.store_url)}, "
        f"{settings.sources(Path.cwd())})",
        markup=False,
    )
    missing = settings.sqlite_path()
    if missing is not None and not missing.exists():
        err.print(
            f"warning: no registry at {missing.absolute()} yet: serving no managed prompts "
            "until some are pushed (gateway prompts push PATH)",
            markup=False,
        )
    if runtime.config:
        os.environ["GATEWAY_CONFIG"] = runtime.config  # every worker loads the same file
    # Replace this process with the server (uvicorn with uvloop, httptools and the gateway's
    # limits on slow and oversized request heads, gateway.api.server), so it does not carry the
    # CLI's libraries (about 8 MiB of resident memory per worker).
    args = [
        sys.executable,
        "-m",
        "gateway.api.server",
        "--host",
        chosen_host,
        "--port",
        str(chosen_port),
        "--workers",
        str(workers or server.workers),
    ]
    # glibc raises its mmap threshold to the largest block freed so far, so after one large
    # request body later ones come from the heap and a burst of them stays resident (measured:
    # 100 concurrent chunked bodies of 10 MiB left RSS 88 MiB higher without this, 28 MiB with
    # it). A fixed threshold gives large blocks back to the system when freed. Other C
    # libraries ignore the variable; a value already set wins.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, args)


def check_free(host: str, port: int) -> None:
    """Fail in one line when the address is taken, before uvicorn prints a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidRequest(f"--host {host!r} is not an address of this machine: {exc}.") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise InvalidRequest(
                f"Port {port} on {host} is in use ({exc.strerror}); choose another with "
                "--port or server.port (GATEWAY_PORT)."
            ) from None
