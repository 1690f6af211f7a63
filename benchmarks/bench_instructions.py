"""An experiment's cost in instructions per call: callgrind over the real app, part by part.

CPU seconds per request move between gateway processes by more than the few percent an
experiment costs (benchmarks/README.md); instructions counted by valgrind's callgrind move far
less. This runs the gateway's app in one process, its ASGI entry called directly (64
calls in flight, nginx as the provider on loopback, tracing off), and counts every instruction
of every thread over `--calls` calls, for four builds of the same registry:

- `plain`: no experiment;
- `assigned`: an experiment running, nothing recorded (the outcome recorder's `calls_finished`
  does nothing): assignment, headers, span fields;
- `queued`: every call queued and batched as an exposure, the store's write a no-op;
- `experiment`: everything, the store's write included.

Each row prints instructions per call and the difference to the row above. The outcome
recorder's own timer is stopped: its queue is written by hand (`flush`), once after the warm-up,
outside the count, and once after the measured calls, inside it, so every measured exposure is
written in the count, in one batch (under load a batch holds hundreds), and no idle time is
counted. What remains varies by a few thousand instructions per call between runs (the event
loop's timers fire by the clock, and valgrind's speed varies); CPU seconds vary by tens of µs.

Needs `valgrind` (Debian package) and nginx. Takes a few minutes per row on a quiet machine, and
several times longer beside other work (a row is given ROW_SECONDS).

Run: python benchmarks/bench_instructions.py [--redis] [--calls 1280]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
from bench_proxy import PROMPT_BODY, free_port, start_gateway, start_nginx, start_redis

ROWS = ("plain", "assigned", "queued", "experiment")
IN_FLIGHT = 64
ROW_SECONDS = 1800
"""How long one row may take under valgrind: 2-4 minutes alone; 600 s was too short twice while
other valgrind runs shared the machine."""
SETTLE_SECONDS = 0.5
"""Long enough for the last calls to settle (their records made, their exposures queued)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1280, help="measured calls per row")
    parser.add_argument("--redis", action="store_true", help="the store in a redis-server")
    parser.add_argument("--inner", choices=ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        asyncio.run(_serve_calls(args.inner, args.calls))
        return
    for tool in ("valgrind", "callgrind_control", "nginx", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install -y valgrind nginx util-linux")
    work = Path(tempfile.mkdtemp(prefix="gateway-instructions-"))
    upstream = free_port()
    nginx = start_nginx(work, upstream)
    redis = None
    try:
        if args.redis:
            port = free_port()
            redis = start_redis(port)
        previous = None
        print(f"{'row':>12} {'instructions per call':>22} {'over the row above':>20}")
        for number, row in enumerate(ROWS):
            if redis is not None:  # plain in a database of its own, the experiment rows in another
                os.environ["GATEWAY_STORE_URL"] = f"redis://127.0.0.1:{port}/{min(number, 1)}"
            total = _count(work, upstream, row, args.calls)
            per_call = total / args.calls
            over = "" if previous is None else f"{per_call - previous:+,.0f}"
            print(f"{row:>12} {per_call:>22,.0f} {over:>20}", flush=True)
            previous = per_call
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(15)
        if redis is not None:
            redis.terminate()
            redis.wait(15)
        shutil.rmtree(work, ignore_errors=True)


def _count(work: Path, upstream: int, row: str, calls: int) -> int:
    """Instructions over `calls` calls of `row`, every thread of the process."""
    experiment = row != "plain"
    db = "experiment.db" if experiment else "plain.db"
    config = work / f"{db}.yaml"
    if not config.exists():  # the registry set up by a gateway's first start (bench_proxy)
        gateway = start_gateway(work, free_port(), upstream, db=db, experiment=experiment)
        gateway.send_signal(signal.SIGINT)
        gateway.wait(15)
    out = work / f"{row}.callgrind"
    env = dict(
        os.environ,
        GATEWAY_CONFIG=str(config),
        GATEWAY_ENV="production",
    )
    process = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--inner",
            row,
            "--calls",
            str(calls),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.startswith("READY"):
                subprocess.run(
                    ["callgrind_control", "-i", "on", str(process.pid)],
                    check=True,
                    capture_output=True,
                )
                process.send_signal(signal.SIGUSR1)  # counting: make the calls
            elif line.startswith("DONE"):
                subprocess.run(
                    ["callgrind_control", "-i", "off", str(process.pid)],
                    check=True,
                    capture_output=True,
                )
                process.send_signal(signal.SIGUSR2)  # not counting any more: stop
                break
        # Read on to the end: with the pipe full of access log lines, the inner process's last
        # flush before it exits would wait for a reader.
        process.communicate(timeout=ROW_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
    if process.returncode != 0:
        sys.exit(f"the {row} run failed (exit {process.returncode})")
    found = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
    if found is None:
        sys.exit(f"no instruction count in {out}")
    return int(found.group(1))


async def _serve_calls(row: str, calls: int) -> None:
    """Under valgrind: warm up, say READY, make `calls` calls on SIGUSR1 (callgrind counts
    then), say DONE, stop on SIGUSR2 (it counts no more)."""
    from gateway import settings as gateway_settings
    from gateway.api.app import create_app
    from gateway.recording.outcomes import OutcomeRecorder
    from gateway.stores.base import Recorded
    from gateway.stores.redis import RedisStore
    from gateway.stores.sqlite import SQLiteStore

    recorders: list[OutcomeRecorder] = []
    made = OutcomeRecorder.__init__

    def make(self: OutcomeRecorder, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        recorders.append(self)

    OutcomeRecorder.__init__ = make  # type: ignore[method-assign]
    if row == "assigned":
        OutcomeRecorder.calls_finished = lambda self, records: None  # type: ignore[method-assign]
    if row == "queued":

        async def written(self: Any, exposures: Any, feedback: Any) -> Recorded:
            return Recorded(exposures=len(exposures), feedback=len(feedback), orphans=0)

        SQLiteStore.record_outcomes = written  # type: ignore[method-assign]
        RedisStore.record_outcomes = written  # type: ignore[method-assign]
    settings = gateway_settings.load(os.environ["GATEWAY_CONFIG"], os.environ)
    app = create_app(settings)
    body = orjson.dumps(PROMPT_BODY)
    loop = asyncio.get_running_loop()
    counting, counted = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, counting.set)
    loop.add_signal_handler(signal.SIGUSR2, counted.set)
    async with app.litestar.lifespan():
        for recorder in recorders:
            await recorder.cancel()  # written by hand below, at known moments
        for _ in range(8):
            await asyncio.gather(*(_call(app, body) for _ in range(IN_FLIGHT)))
        await _write_outcomes(recorders)
        print("READY", flush=True)
        await counting.wait()
        for made in range(0, calls, IN_FLIGHT):
            await asyncio.gather(*(_call(app, body) for _ in range(min(IN_FLIGHT, calls - made))))
        await _write_outcomes(recorders)
        print("DONE", flush=True)
        await counted.wait()
        # Counted: end here. Stopping the app is not measured, and under valgrind the Redis
        # experiment row's shutdown once waited for a cancelled task without end.
        sys.stdout.flush()
        os._exit(0)


async def _write_outcomes(recorders: list[Any]) -> None:
    """Let the finished calls settle, then write every queued exposure in one batch."""
    await asyncio.sleep(SETTLE_SECONDS)
    for recorder in recorders:
        await recorder.flush()


async def _call(app: Any, body: bytes) -> None:
    """One chat completion through the app's ASGI entry; raises unless it answers 200."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client never hangs up
        return {"type": "http.disconnect"}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    if status != [200]:
        raise RuntimeError(f"the gateway answered {status}")


if __name__ == "__main__":
    main()
