"""Load benchmark of the proxy: the gateway on one core against the provider hit directly.

Needs `nginx`, its echo module and `wrk` (Debian: `apt-get install -y nginx
libnginx-mod-http-echo wrk`) and a 2-core machine. It starts, on loopback only: nginx as the
provider (a static chat completion, and a 20-chunk SSE stream whose events it writes and flushes
one by one, as a provider streams; `--whole-stream`: the same bytes in one write),
the gateway under `taskset -c 0` with a managed prompt injected on every request, and wrk under
`taskset -c 1`. Every run is bounded in time; everything it started is stopped at the end.

Run: python benchmarks/bench_proxy.py [--rounds 3] [--seconds 10] [--whole-stream]
     python benchmarks/bench_proxy.py --direct [--seconds 10]
     python benchmarks/bench_proxy.py --tracing [--rounds 8] [--seconds 4]
     python benchmarks/bench_proxy.py --experiment [--redis] [--processes 3] [--rounds 8]
     python benchmarks/bench_proxy.py --experiment [--redis] --together [--aa] --processes 6
     python benchmarks/bench_proxy.py --experiment [--redis] --crossover --processes 6
     python benchmarks/bench_proxy.py --capture [--rounds 8] [--seconds 4]

By default (issue 15) it compares the gateway with every feature on (a managed prompt named in
the X-Prompt-* headers or in the body, tracing exported to nginx, metrics, the access log) with
the bare forwarder of `bare_forwarder.py` (FLOOR.md), both on core 0, loaded in interleaved
rounds, and prints the ratio of each row. `--direct` is the earlier single run against nginx.

`--tracing` compares tracing off and on instead: two gateways (one exporting every span to nginx,
which answers /v1/traces with an empty 200), loaded in turn for several rounds so that drift in
the machine's speed falls on both alike; it prints every round and the medians. `--experiment`
does the same for a registry without and with an experiment running on the prompt (every call
then an exposure, queued and written to SQLite in batches; no user key, so each call is a unit).
`--capture` does the same for adoption capture off and on (PRODUCT §14), with an unmanaged
request carrying a hard-coded system prompt (`APP_BODY`): every call is then counted for
adoption, and the counts written to SQLite in batches.

Each gateway process has a speed of its own (measured: three processes of one build at 250, 250
and 259 µs of CPU per request, within a run whose rounds agreed to a few µs), so one process per
side cannot resolve a difference of a few percent: `--processes N` starts N of each side and
loads all of them in the interleaved rounds; the result is the mean over the N pairs.

Even so, this host's speed moves by more between seconds than a few percent (benchmarks/README.md:
the same build against itself, two seconds each in turn, sd 20 points per pair of runs).
`--together` loads each pair at the same time on the shared core 0 and compares their CPU per
request over the same seconds (`compare_together`); `--aa` makes both sides the first kind, to
see what the method says when there is no difference. `--crossover` (experiments only) does the
same with every process in both roles in turn, so each process's own speed cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from nginx."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 5, "total_tokens": 125},
    }
).decode()


def sse_body() -> str:
    """20 chunks and the usage chunk, small enough for one nginx `return` (under 4 KiB)."""
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = []
    for i in range(19):
        events.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}],
            }
        )
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 120, "completion_tokens": 19, "total_tokens": 139},
        }
    )
    return "".join(f"data: {orjson.dumps(e).decode()}\n\n" for e in events) + "data: [DONE]\n\n"


PROMPT_BODY: dict[str, object] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Where is my order #1234?"}],
    "prompt": {
        "id": "support-agent",
        "variables": {"company": "Acme", "timezone": "Europe/Berlin", "tools": "search"},
    },
}

STREAM_PROMPT = "support-agent-stream"
"""support-agent with its model routed to the SSE location (made by `start_gateway`)."""
STREAM_BODY = {
    **PROMPT_BODY,
    "model": "stream-gpt-4o-mini",
    "stream": True,
    "prompt": {**PROMPT_BODY["prompt"], "id": STREAM_PROMPT},  # type: ignore[dict-item]
}

APP_BODY = {
    "model": "gpt-4o-mini",
    "temperature": 0.2,
    "messages": [
        {
            "role": "system",
            "content": "You are the support assistant of Acme Cloud. You are talking to Ada "
            "Lovelace, a customer on the Pro plan. Answer briefly and never reveal internal notes.",
        },
        {"role": "user", "content": "Where is my order #1234?"},
    ],
}
"""An app's unmanaged call with its system prompt in code (`--capture`)."""


ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
"""nginx's echo module (Debian's libnginx-mod-http-echo): writes and flushes each SSE event."""
INSTALL = "apt-get install -y nginx libnginx-mod-http-echo wrk"


def require_tools() -> None:
    """Exit with the command that installs them when nginx, wrk or taskset are missing (the
    echo module: `start_nginx`)."""
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: {INSTALL}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing on port {port}")


def _literal(text: str) -> str:
    """`text` as a quoted string of nginx's configuration."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sse_location(whole: bool) -> str:
    """The body of nginx's SSE location: each event written and flushed on its own (a chunk of
    the chunked answer, as a provider streams its tokens), or with `whole` the stream in one
    write with a length."""
    body = sse_body()
    if whole:
        return f"return 200 {_literal(body)};"
    events = [event + "\n\n" for event in body.split("\n\n") if event]
    return "echo_read_request_body;\n" + "\n".join(
        f"      echo -n {_literal(event)}; echo_flush;" for event in events
    )


def start_nginx(
    work: Path, port: int, sink_port: int = 9, *, whole_stream: bool = False
) -> subprocess.Popen[bytes]:
    """nginx as the provider on core 1 (`sse_location`: how its stream is written)."""
    if not ECHO_MODULE.exists():
        sys.exit(f"nginx's echo module is needed: {INSTALL}")
    conf = work / "nginx.conf"
    conf.write_text(f"""
load_module {ECHO_MODULE};
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {work};
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 {_literal(COMPLETION)};
    }}
    location = /v1/traces {{  # a full export batch is over nginx's default 1 MB body limit
      client_max_body_size 0;
      default_type application/x-protobuf;
      return 200 '';
    }}
    location = /sse/v1/chat/completions {{
      default_type text/event-stream;
      {sse_location(whole_stream)}
    }}
    location = /v1/files {{  # to an upload sink that reads every byte (bench_bodies.py)
      client_max_body_size 0;
      proxy_request_buffering off;
      proxy_http_version 1.1;
      proxy_pass http://127.0.0.1:{sink_port};
    }}
    location /v1/responses/ {{
      alias {work}/events/;
      default_type text/event-stream;
    }}
  }}
}}
""")
    proc = subprocess.Popen(
        ["taskset", "-c", "1", "nginx", "-c", str(conf), "-p", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


ENVIRONMENTS: dict[int, dict[str, str]] = {}
"""Each started gateway's environment, by port: what the CLI needs to reach its store."""


def start_gateway(
    work: Path,
    port: int,
    upstream: int,
    tracing: bool = False,
    *,
    db: str = "gateway.db",
    experiment: bool = False,
    capture: bool = False,
) -> subprocess.Popen[bytes]:
    """A gateway on core 0 (the registry is set up on first use: shipped prompts, 1.1.0 active;
    with `experiment`, an experiment between 1.0.0 and 1.1.0 running on support-agent)."""
    config = work / f"{db}.yaml"
    config.write_text(f"""
store_url: sqlite:///{work}/{db}
providers:
  json: {{base_url: "http://127.0.0.1:{upstream}/v1"}}
  sse: {{base_url: "http://127.0.0.1:{upstream}/sse/v1"}}
routes:
  - {{model: "stream-*", provider: sse}}
  - {{model: "*", provider: json}}
adoption: {{capture: {str(capture).lower()}}}
""")
    gateway = str(Path(sys.executable).parent / "gateway")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"GATEWAY_CONFIG": str(config), "GATEWAY_ENV": "production"})
    if tracing:  # nginx doubles as the OTLP sink: it answers /v1/traces with an empty 200
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{upstream}"})
    if not (work / db).exists():
        # The prompt's version names the model, so a streamed managed call needs a prompt of
        # its own whose model routes to the SSE location: support-agent-stream.
        streamed = work / "stream-prompts"
        streamed.mkdir(exist_ok=True)
        (streamed / "support-agent-stream.yaml").write_text(
            (ROOT / "config/prompts/support-agent.yaml")
            .read_text()
            .replace("name: support-agent", f"name: {STREAM_PROMPT}")
            .replace("model: gpt-4o-mini", "model: stream-gpt-4o-mini")
        )
        commands = [
            ["prompts", "push", str(ROOT / "config/prompts")],
            ["prompts", "push", str(streamed)],
            ["prompts", "promote", "support-agent", "1.1.0", "--force"],
            ["prompts", "promote", STREAM_PROMPT, "1.1.0", "--force"],
        ]
        if experiment:
            create = ["experiments", "create", "--id", "bench", "--prompt", "support-agent"]
            arms = ["--control", "1.0.0", "--treatment", "1.1.0", "--split", "0.5"]
            commands.append([*create, *arms, "--metric", "latency"])
        for command in commands:
            subprocess.run([gateway, *command], env=env, check=True, stdout=subprocess.DEVNULL)
    ENVIRONMENTS[port] = env
    proc = subprocess.Popen(
        ["taskset", "-c", "0", gateway, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A redis-server of the run's own on core 1 (with nginx and wrk), nothing saved to disk."""
    server = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    proc = subprocess.Popen(
        ["taskset", "-c", "1", *server, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def process_label(name: str, copy: int, copies: int) -> str:
    """A gateway process's name in the comparisons: the kind, numbered when there are several."""
    return name if copies == 1 else f"{name}-{copy}"


def start_forwarder(work: Path, port: int, upstream: int) -> subprocess.Popen[bytes]:
    """The bare forwarder (`bare_forwarder.py`, FLOOR.md) on core 0, like the gateway."""
    base = f"http://127.0.0.1:{upstream}"
    script = str(ROOT / "benchmarks/bare_forwarder.py")
    urls = ["--upstream", f"{base}/v1", "--stream-upstream", f"{base}/sse/v1"]
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, script, "--port", str(port), *urls],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def wrk(
    work: Path,
    url: str,
    body: dict[str, object],
    connections: int,
    seconds: int,
    *,
    delay_ms: int | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """One wrk run (one thread, on core 1); with `delay_ms`, each connection waits that long
    before each request. Requests/s, total, non-2xx `errors`, `socket_errors`, p50/p99 (ms)."""
    key = orjson.dumps([body, headers])
    script = work / f"wrk-{abs(hash(key))}-{delay_ms}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        + "".join(
            f"wrk.headers[{orjson.dumps(n).decode()}] = {orjson.dumps(v).decode()}\n"
            for n, v in (headers or {}).items()
        )
        + f"wrk.body = {orjson.dumps(orjson.dumps(body).decode()).decode()}\n"
        + (f"function delay() return {delay_ms} end\n" if delay_ms is not None else "")
    )
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    latency = {p: _ms(m) for p, m in re.findall(r"\n\s+(50|99)%\s+([\d.]+\w+)", out)}
    return {
        "rps": rps,
        "total": total,
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(int(n) for n in sockets.groups()) if sockets else 0,
        "p50": latency.get("50", float("nan")),
        "p99": latency.get("99", float("nan")),
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def first_byte_ms(port: int, path: str, body: bytes, rounds: int = 200) -> float:
    """Median time from sending a streaming request to its first body byte, one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        writer.write(request)
        await writer.drain()
        headers = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(1)
        samples.append((time.perf_counter() - start) * 1000)
        # drain the rest of this response: chunked, ends with 0\r\n\r\n
        if b"chunked" in headers.lower():
            await reader.readuntil(b"\r\n0\r\n\r\n")
        else:
            length = int(re.search(rb"content-length: (\d+)", headers.lower()).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length - 1)
    writer.close()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--tracing", action="store_true", help="compare tracing off and on")
    parser.add_argument(
        "--experiment",
        action="store_true",
        help="compare no experiment and a running one (every call recorded)",
    )
    parser.add_argument(
        "--capture",
        action="store_true",
        help="compare adoption capture off and on (an unmanaged call with a system prompt)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="the old single run: the gateway against nginx hit directly (no forwarder)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved rounds (default 3 against the forwarder, 8 with the comparisons)",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="keep the registry (and experiment outcomes) in a redis-server of the run's own",
    )
    parser.add_argument(
        "--whole-stream",
        action="store_true",
        help="nginx writes each stream in one write (default: event by event, flushed)",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="comparisons: load each pair at once, sharing core 0 (see compare_together)",
    )
    parser.add_argument(
        "--crossover",
        action="store_true",
        help="--experiment --together, each process in both roles in turn (compare_crossover)",
    )
    parser.add_argument(
        "--aa",
        action="store_true",
        help="comparisons: both sides are the first kind (an A/A check of the method itself)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="gateway processes per side in the comparisons (--tracing, --experiment, --capture)",
    )
    args = parser.parse_args()
    require_tools()
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    upstream_port = free_port()
    nginx = start_nginx(work, upstream_port, whole_stream=args.whole_stream)
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    redis = None
    if args.redis:  # each gateway gets a database of its own
        redis_port = free_port()
        redis = start_redis(redis_port)
    try:
        names = (
            ("off", "on")
            if args.tracing
            else ("plain", "experiment")
            if args.experiment
            else ("nocapture", "capture")
            if args.capture
            else ("off",)
            if args.direct
            else ("on",)
        )
        copies = args.processes if len(names) == 2 else 1
        for number, (copy, name) in enumerate(
            ((copy, name) for copy in range(1, copies + 1) for name in names), start=1
        ):
            if redis is not None:  # a database of its own (Redis has 16 by default)
                os.environ["GATEWAY_STORE_URL"] = f"redis://127.0.0.1:{redis_port}/{number}"
            port = free_port()
            label = process_label(name, copy, copies)
            # --aa: the second side is the first kind too; --crossover: roles are set per round
            kind = names[0] if args.aa or args.crossover else name
            gateways[label] = (
                start_gateway(
                    work,
                    port,
                    upstream_port,
                    kind == "on",
                    db=f"{label}.db",
                    experiment=kind == "experiment",
                    capture=kind == "capture",
                ),
                port,
            )
        if len(names) == 2:
            body = APP_BODY if args.capture else PROMPT_BODY
            if args.crossover:
                compare_crossover(work, args.seconds, args.rounds or 4, gateways, names, copies)
            elif args.together:
                compare_together(
                    work, args.seconds, args.rounds or 6, gateways, names, body, copies
                )
            else:
                compare(work, args.seconds, args.rounds or 8, gateways, names, body, copies)
        elif names == ("on",):
            forwarder_port = free_port()
            forwarder = start_forwarder(work, forwarder_port, upstream_port)
            try:
                proc, port = gateways["on"]
                pair = (forwarder.pid, forwarder_port), (proc.pid, port)
                floor(work, args.seconds, args.rounds or 3, *pair)
            finally:
                forwarder.send_signal(signal.SIGINT)
                forwarder.wait(15)
        else:
            proc, port = gateways["off"]
            run(work, args.seconds, upstream_port, port, proc.pid)
    finally:
        for proc, _ in gateways.values():
            proc.send_signal(signal.SIGINT)
        nginx.send_signal(signal.SIGQUIT)
        for proc, _ in gateways.values():
            proc.wait(15)
        nginx.wait(15)
        if redis is not None:
            redis.terminate()
            redis.wait(15)
        shutil.rmtree(work, ignore_errors=True)


def compare(
    work: Path,
    seconds: int,
    rounds: int,
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]],
    names: tuple[str, str],
    body: dict[str, object] = PROMPT_BODY,
    copies: int = 1,
) -> None:
    """Two kinds of gateway (tracing off and on, without and with an experiment, capture off and
    on), `copies` processes of each (labelled `name-1`, `name-2`, ... when more than one),
    loaded in turn with `body` (every other round in reverse order): requests/s and CPU per
    request at 64 connections, latency p50 at one connection; every round, then each process's
    medians and, per kind, their mean."""
    for _, port in gateways.values():
        wrk(work, f"http://127.0.0.1:{port}/v1/chat/completions", body, 16, 3)  # warm up
    place_writers(gateways)
    results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in gateways}
    print(f"{'round':>5} {'gateway':>12} {'req/s':>8} {'CPU/req (ms)':>13} {'p50 1 conn (ms)':>16}")
    for number in range(1, rounds + 1):
        order = list(gateways.items())
        for label, (proc, port) in order if number % 2 else reversed(order):
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            before = cpu_seconds(proc.pid)
            loaded = wrk(work, url, body, 64, seconds)
            cpu_ms = (cpu_seconds(proc.pid) - before) * 1000 / max(loaded["total"], 1)
            single = wrk(work, url, body, 1, max(seconds // 2, 2))
            results[label].append((loaded["rps"], cpu_ms, single["p50"]))
            print(
                f"{number:>5} {label:>12} {loaded['rps']:>8,.0f} {cpu_ms:>13.3f} "
                f"{single['p50']:>16.2f}",
                flush=True,
            )
            if loaded["errors"] or single["errors"]:
                print(f"      non-2xx: {loaded['errors'] + single['errors']}")
    medians = {
        label: [statistics.median(row[i] for row in rows) for i in range(3)]
        for label, rows in results.items()
    }
    labels = {
        name: [process_label(name, k, copies) for k in range(1, copies + 1)] for name in names
    }
    if copies > 1:
        print("\nper process (medians of its rounds):")
        for label, (rps, cpu_ms, p50) in medians.items():
            print(f"{label:>14} {rps:>8,.0f} req/s {cpu_ms:>7.3f} ms CPU/req {p50:>6.2f} ms p50")
    off, on = (
        [statistics.fmean(medians[label][i] for label in labels[name]) for i in range(3)]
        for name in names
    )
    # each round's ratio pairs runs made within seconds of each other (process k with process k)
    pairs = [
        statistics.median(b[0] / a[0] - 1 for a, b in zip(results[x], results[y], strict=True))
        for x, y in zip(labels[names[0]], labels[names[1]], strict=True)
    ]
    paired = statistics.fmean(pairs)
    what = "medians" if copies == 1 else f"means of {copies} processes' medians"
    within = "median change within a round" + ("" if copies == 1 else ", mean of the pairs'")
    middle = "" if copies == 1 else f" (the median pair's {statistics.median(pairs) * 100:+.1f}%)"
    print(
        f"\n{what}: {off[0]:,.0f} -> {on[0]:,.0f} req/s ({(on[0] / off[0] - 1) * 100:+.1f}%), "
        f"{within} {paired * 100:+.1f}%{middle}, "
        f"CPU/request {off[1]:.3f} -> {on[1]:.3f} ms, "
        f"p50 at 1 connection {off[2]:.2f} -> {on[2]:.2f} ms ({on[2] - off[2]:+.2f} ms)"
    )


def compare_together(
    work: Path,
    seconds: int,
    rounds: int,
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]],
    names: tuple[str, str],
    body: dict[str, object] = PROMPT_BODY,
    copies: int = 1,
) -> None:
    """The two kinds compared over the same seconds: in each round, each pair of processes
    (`name-k` of both kinds) is loaded at once, 64 connections each (two wrk processes on core
    1), while both share core 0. A slower second of the machine (the host's other guests) then
    falls on both alike, where `compare`'s runs a few seconds apart differ by more than the few
    percent looked for.

    The figure is CPU per request (each process's on-CPU nanoseconds from the scheduler,
    /proc/PID/task/*/schedstat, over its requests): alone on its core the gateway is CPU-bound
    (busy 98% of a run), so its throughput alone is the inverse, and the change printed is
    `CPU per request of the first / of the second - 1`. Requests served together are printed
    too; they are not the figure, as the scheduler shares the core between threads, not
    processes, and a process waiting on nothing gets the rest. Prints every pair per round, then
    the mean of the pairs' mean changes with its 95% confidence interval (Student's t over the
    pairs: the rounds of one pair share its processes' own speed, so they are not independent;
    use `--processes 6` or more).

    A SQLite gateway writes its experiment outcomes in a child process (the store's outcome
    writer), which `place_writers` puts on core 1 beside nginx and wrk, where a Redis gateway's
    redis-server runs: the figure is the serving process's CPU, and the same change with each
    writer's CPU added is printed beside it (what one core would pay for both)."""
    pairs = [
        tuple(gateways[process_label(name, k, copies)] for name in names)
        for k in range(1, copies + 1)
    ]
    for _, port in gateways.values():
        wrk(work, f"http://127.0.0.1:{port}/v1/chat/completions", body, 16, 3)  # warm up
    writers = place_writers(gateways)
    print(
        f"{'round':>5} {'pair':>4} {'requests':>18} {'CPU/req (µs)':>16} {'throughput':>11}"
        f"{'with writers':>24}"
    )
    changes: list[float] = []
    with_writers: list[float] = []
    for number in range(1, rounds + 1):
        for k, pair in enumerate(pairs, start=1):
            loaded, cpu, every = load_pair(work, pair, body, seconds)
            change = cpu[0] / cpu[1] - 1
            changes.append(change)
            with_writers.append(every[0] / every[1] - 1)
            print(
                f"{number:>5} {k:>4} {loaded[0]['total']:>8,} {loaded[1]['total']:>8,} "
                f"{cpu[0]:>7.1f} {cpu[1]:>7.1f} {change * 100:>+10.1f}%"
                f"{every[0]:>9.1f} {every[1]:>7.1f} {with_writers[-1] * 100:>+6.1f}%",
                flush=True,
            )
            if loaded[0]["errors"] or loaded[1]["errors"]:
                print(f"      non-2xx: {loaded[0]['errors'] + loaded[1]['errors']}")
    # Each pair of processes has a speed of its own (a few points apart; the module's docstring),
    # so the unit of the interval is the pair: its mean over the rounds, n = the pairs.
    by_pair = [statistics.fmean(changes[k :: len(pairs)]) for k in range(len(pairs))]
    mean, half = interval_over_pairs(by_pair)
    listed = ", ".join(f"{change * 100:+.1f}%" for change in by_pair)
    print(
        f"\n{names[0]} -> {names[1]}, loaded together: throughput (from CPU per request) "
        f"{mean * 100:+.2f}%, 95% CI {(mean - half) * 100:+.2f}% to {(mean + half) * 100:+.2f}% "
        f"over the {len(by_pair)} pairs' means ({listed}); {len(changes)} pair-rounds, their "
        f"median {statistics.median(changes) * 100:+.2f}%"
    )
    if writers:
        by_pair = [statistics.fmean(with_writers[k :: len(pairs)]) for k in range(len(pairs))]
        print(
            "with the CPU of each gateway's outcome writer process added (SQLite; on core "
            f"{WRITER_CORE}): {statistics.fmean(by_pair) * 100:+.2f}% over the pairs' means "
            f"({', '.join(f'{change * 100:+.1f}%' for change in by_pair)})"
        )


def compare_crossover(
    work: Path,
    seconds: int,
    rounds: int,
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]],
    names: tuple[str, str],
    copies: int,
) -> None:
    """`compare_together` with each process in both roles: every process starts without an
    experiment, and before each pair-round one process of the pair gets a running experiment
    (a new one, `gateway experiments create`) while the other's is stopped, the first process
    of the pair in odd rounds and the second in even ones (the other way round for every other
    pair). Each process's own speed (pairs of processes differ by several points on their own,
    benchmarks/README.md) then falls on both roles alike, as in a crossover trial; use an even
    number of rounds. A stopped experiment stays in the registry: each side's resolution then
    passes over the same stopped ones (at most `rounds`).

    Before each load the roles are checked on a call's response (the `x-prompt-experiment`
    header there or not) and both processes are warmed for a second. The figure is as in
    `compare_together`: CPU per request, plain over experiment, the mean of the pairs' means
    with its 95% CI over the pairs."""
    pairs = [
        tuple(gateways[process_label(name, k, copies)] for name in names)
        for k in range(1, copies + 1)
    ]
    for _, port in gateways.values():
        wrk(work, f"http://127.0.0.1:{port}/v1/chat/completions", PROMPT_BODY, 16, 3)
    running: dict[int, str] = {}  # port -> the id of its running experiment
    columns = f"{'experiment':>10} {'CPU/req (µs) plain, exp':>24} {'change':>8}"
    print(f"{'round':>5} {'pair':>4} {columns}")
    changes: list[list[float]] = [[] for _ in pairs]
    for number in range(1, rounds + 1):
        for k, pair in enumerate(pairs):
            first = (number + k) % 2 == 1  # the pair's first process serves the experiment
            experiment, plain = pair if first else (pair[1], pair[0])
            set_roles(experiment[1], plain[1], running, f"bench-{number}-{k}")
            for _, port in pair:
                wrk(work, f"http://127.0.0.1:{port}/v1/chat/completions", PROMPT_BODY, 16, 1)
            place_writers(gateways)  # a writer starts with its gateway's first batch
            loaded, cpu, _ = load_pair(work, (plain, experiment), PROMPT_BODY, seconds)
            change = cpu[0] / cpu[1] - 1
            changes[k].append(change)
            print(
                f"{number:>5} {k + 1:>4} {'first' if first else 'second':>10} "
                f"{cpu[0]:>11.1f} {cpu[1]:>11.1f} {change * 100:>+8.1f}%",
                flush=True,
            )
            if loaded[0]["errors"] or loaded[1]["errors"]:
                print(f"      non-2xx: {loaded[0]['errors'] + loaded[1]['errors']}")
    by_pair = [statistics.fmean(pair_changes) for pair_changes in changes]
    mean, half = interval_over_pairs(by_pair)
    listed = ", ".join(f"{change * 100:+.1f}%" for change in by_pair)
    every = [change for pair_changes in changes for change in pair_changes]
    print(
        f"\nplain -> experiment, crossover (each process in both roles): throughput (from CPU "
        f"per request) {mean * 100:+.2f}%, 95% CI {(mean - half) * 100:+.2f}% to "
        f"{(mean + half) * 100:+.2f}% over the {len(by_pair)} pairs' means ({listed}); "
        f"{len(every)} pair-rounds, their median {statistics.median(every) * 100:+.2f}%"
    )


def load_pair(
    work: Path,
    pair: Sequence[tuple[subprocess.Popen[bytes], int]],
    body: dict[str, object],
    seconds: int,
) -> tuple[list[dict[str, float]], list[float], list[float]]:
    """Load the gateways of `pair` at once, 64 connections each (a wrk each, on core 1): wrk's
    results, and each gateway's CPU per request (µs), its own and with its child processes'
    (a SQLite gateway's outcome writer) added."""
    before = [on_cpu_ns(proc.pid) for proc, _ in pair]
    before_all = [on_cpu_ns(proc.pid, children=True) for proc, _ in pair]
    with ThreadPoolExecutor(len(pair)) as pool:
        loaded = list(
            pool.map(
                lambda target: wrk(
                    work, f"http://127.0.0.1:{target[1]}/v1/chat/completions", body, 64, seconds
                ),
                pair,
            )
        )
    cpu = [
        (on_cpu_ns(proc.pid) - start) / 1000 / max(result["total"], 1)
        for (proc, _), start, result in zip(pair, before, loaded, strict=True)
    ]
    every = [
        (on_cpu_ns(proc.pid, children=True) - start) / 1000 / max(result["total"], 1)
        for (proc, _), start, result in zip(pair, before_all, loaded, strict=True)
    ]
    return loaded, cpu, every


def interval_over_pairs(by_pair: list[float]) -> tuple[float, float]:
    """The mean of the pairs' mean changes and the half-width of its 95% confidence interval
    (Student's t, n = the pairs; NaN with one pair)."""
    from scipy import stats  # the project's own dependency (experiment statistics)

    mean = statistics.fmean(by_pair)
    if len(by_pair) < 2:
        return mean, float("nan")
    spread = statistics.stdev(by_pair) / len(by_pair) ** 0.5
    return mean, float(stats.t.ppf(0.975, len(by_pair) - 1)) * spread


def set_roles(experiment: int, plain: int, running: dict[int, str], new_id: str) -> None:
    """Start experiment `new_id` on the gateway at port `experiment` and stop the one running
    on the gateway at `plain`, through the CLI on each one's store; return once each gateway
    serves accordingly (a call's `x-prompt-experiment` header)."""
    gateway = str(Path(sys.executable).parent / "gateway")
    commands: list[tuple[int, list[str]]] = []
    if plain in running:
        commands.append((plain, ["experiments", "stop", running.pop(plain)]))
    if experiment not in running:
        create = ["experiments", "create", "--id", new_id, "--prompt", "support-agent"]
        arms = ["--control", "1.0.0", "--treatment", "1.1.0", "--split", "0.5"]
        commands.append((experiment, [*create, *arms, "--metric", "latency"]))
        running[experiment] = new_id
    with ThreadPoolExecutor(2) as pool:
        list(
            pool.map(
                lambda command: subprocess.run(
                    [gateway, *command[1]],
                    env=ENVIRONMENTS[command[0]],
                    check=True,
                    stdout=subprocess.DEVNULL,
                ),
                commands,
            )
        )
    for port, wanted in ((experiment, True), (plain, False)):
        deadline = time.monotonic() + 15
        while serves_experiment(port) != wanted:
            if time.monotonic() > deadline:
                raise SystemExit(f"the gateway on port {port} did not take its role in 15 s")
            time.sleep(0.05)


def serves_experiment(port: int) -> bool:
    """Whether a managed call to the gateway at `port` is served in an experiment now."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=orjson.dumps(PROMPT_BODY),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("x-prompt-experiment") is not None


WRITER_CORE = 1
"""Where `place_writers` puts the gateways' outcome writer processes: with nginx, wrk and Redis."""


def _children(pid: int) -> list[int]:
    """The process's child processes now (a SQLite gateway's outcome writer, once it started)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def place_writers(gateways: dict[str, tuple[subprocess.Popen[bytes], int]]) -> int:
    """Move each gateway's child processes (the SQLite store's outcome writer, started by the
    warm-up's first batch) from the gateway's core 0 to WRITER_CORE, as redis-server is; how
    many there were."""
    placed = 0
    for proc, _ in gateways.values():
        for child in _children(proc.pid):
            os.sched_setaffinity(child, {WRITER_CORE})
            placed += 1
    return placed


def on_cpu_ns(pid: int, *, children: bool = False) -> int:
    """Nanoseconds the process's threads have run on a CPU so far (the scheduler's own count,
    the first field of each thread's schedstat; the clock ticks of /proc/PID/stat are 10 ms);
    with `children`, its child processes' too (a SQLite gateway's outcome writer)."""
    total = sum(on_cpu_ns(child) for child in _children(pid)) if children else 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        # A thread that ends between two readings takes its time with it: the gateway's own
        # threads (its event loop, the SQLite writer's pool) live as long as the process.
        with contextlib.suppress(FileNotFoundError):  # it ended while the folder was read
            total += int((task / "schedstat").read_text().split()[0])
    return total


HEADER_PROMPT = {
    "X-Prompt-Name": "support-agent",
    "X-Prompt-Variables": orjson.dumps(PROMPT_BODY["prompt"]["variables"]).decode(),  # type: ignore[index]
}
PLAIN_BODY = {k: v for k, v in PROMPT_BODY.items() if k != "prompt"}


def floor(
    work: Path, seconds: int, rounds: int, forwarder: tuple[int, int], gateway: tuple[int, int]
) -> None:
    """The bare forwarder and the gateway (every feature on), loaded in turn for `rounds`
    rounds: per target, 64 connections (requests/s, CPU per request), 8 streaming connections
    (streams/s, CPU per stream), 1 connection (p50, p99). Prints every round, then the medians
    and each gateway row's ratio to the forwarder."""
    stream = {"model": "stream-gpt-4o-mini", "stream": True}
    # name: (pid, port, body, stream body, headers, stream headers)
    Target = tuple[int, int, dict[str, object], dict[str, object], dict[str, str], dict[str, str]]
    targets: dict[str, Target] = {
        "bare forwarder": (*forwarder, PLAIN_BODY, {**PLAIN_BODY, **stream}, {}, {}),
        "gateway, prompt in header": (
            *gateway,
            PLAIN_BODY,
            {**PLAIN_BODY, **stream},
            HEADER_PROMPT,
            {**HEADER_PROMPT, "X-Prompt-Name": STREAM_PROMPT},
        ),
        "gateway, prompt in body": (*gateway, PROMPT_BODY, STREAM_BODY, {}, {}),
    }
    columns = ("req/s", "CPU/req ms", "streams/s", "CPU/stream ms", "p50 ms", "p99 ms")
    results: dict[str, list[tuple[float, ...]]] = {name: [] for name in targets}
    for _pid, port, body, _stream_body, headers, _stream_headers in targets.values():
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk(work, url, body, 16, 2, headers=headers)  # warm up
    print(f"{'round':>5} {'target':>26}" + "".join(f"{c:>14}" for c in columns), flush=True)
    for number in range(1, rounds + 1):
        for name, (pid, port, body, stream_body, headers, stream_headers) in targets.items():
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            before = cpu_seconds(pid)
            loaded = wrk(work, url, body, 64, seconds, headers=headers)
            cpu_req = (cpu_seconds(pid) - before) * 1000 / max(loaded["total"], 1)
            before = cpu_seconds(pid)
            streams = wrk(work, url, stream_body, 8, seconds, headers=stream_headers)
            cpu_stream = (cpu_seconds(pid) - before) * 1000 / max(streams["total"], 1)
            single = wrk(work, url, body, 1, max(seconds // 2, 2), headers=headers)
            row = (
                loaded["rps"],
                cpu_req,
                streams["rps"],
                cpu_stream,
                single["p50"],
                single["p99"],
            )
            results[name].append(row)
            print(
                f"{number:>5} {name:>26}{row[0]:>14,.0f}{row[1]:>14.3f}{row[2]:>14,.0f}"
                f"{row[3]:>14.3f}{row[4]:>14.2f}{row[5]:>14.2f}",
                flush=True,
            )
            errors = sum(r["errors"] + r["socket_errors"] for r in (loaded, streams, single))
            if errors:
                print(f"      errors (non-2xx or socket): {errors:,.0f}")
    medians = {
        name: [statistics.median(r[i] for r in rows) for i in range(len(columns))]
        for name, rows in results.items()
    }
    base = medians["bare forwarder"]
    print(f"\nmedians of {rounds} rounds ({seconds} s runs); ratio = gateway / bare forwarder")
    print(f"{'':26}" + "".join(f"{c:>14}" for c in columns))
    for name, figures in medians.items():
        print(f"{name:26}" + "".join(f"{v:>14,.3f}" for v in figures))
        if name != "bare forwarder":
            ratios = [v / b if b else float("nan") for v, b in zip(figures, base, strict=True)]
            print(f"{'  ratio':26}" + "".join(f"{r:>14.2f}" for r in ratios))
            # each round's throughput ratio pairs runs made within seconds of each other
            paired = [
                statistics.median(
                    g[i] / b[i]
                    for g, b in zip(results[name], results["bare forwarder"], strict=True)
                )
                for i in (0, 2)
            ]
            print(
                f"{'  within-round ratio':26}{paired[0]:>14.2f}{'':>14}{paired[1]:>14.2f}"
                f"{'':>14}{figures[4] - base[4]:>+14.2f}{figures[5] - base[5]:>+14.2f}"
                "  (p50/p99: added ms)"
            )


def run(work: Path, seconds: int, upstream: int, gateway: int, pid: int) -> None:
    direct = f"http://127.0.0.1:{upstream}"
    via = f"http://127.0.0.1:{gateway}"
    plain = {k: v for k, v in PROMPT_BODY.items() if k != "prompt"}
    stream_body = STREAM_BODY
    direct_stream = {**plain, "stream": True}

    wrk(work, via + "/v1/chat/completions", PROMPT_BODY, 16, 3)  # warm up
    rows: list[tuple[str, str, str]] = []

    cpu_before = cpu_seconds(pid)
    g64 = wrk(work, via + "/v1/chat/completions", PROMPT_BODY, 64, seconds)
    cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / max(g64["total"], 1)
    d64 = wrk(work, direct + "/v1/chat/completions", plain, 64, seconds)
    rows.append(("requests/s, 64 connections", f"{d64['rps']:,.0f}", f"{g64['rps']:,.0f}"))
    for conns in (8, 1):
        d = wrk(work, direct + "/v1/chat/completions", plain, conns, seconds)
        g = wrk(work, via + "/v1/chat/completions", PROMPT_BODY, conns, seconds)
        rows.append((f"latency p50, {conns} conn (ms)", f"{d['p50']:.2f}", f"{g['p50']:.2f}"))
        rows.append((f"latency p99, {conns} conn (ms)", f"{d['p99']:.2f}", f"{g['p99']:.2f}"))
        if conns == 1:
            added = (g["p50"] - d["p50"], g["p99"] - d["p99"])
    ds = wrk(work, direct + "/sse/v1/chat/completions", direct_stream, 8, seconds)
    gs = wrk(work, via + "/v1/chat/completions", stream_body, 8, seconds)
    rows.append(("streams/s (20 chunks), 8 conn", f"{ds['rps']:,.0f}", f"{gs['rps']:,.0f}"))
    d_ttfb = asyncio.run(
        first_byte_ms(upstream, "/sse/v1/chat/completions", orjson.dumps(direct_stream))
    )
    g_ttfb = asyncio.run(first_byte_ms(gateway, "/v1/chat/completions", orjson.dumps(stream_body)))
    rows.append(("time to first byte, stream (ms)", f"{d_ttfb:.3f}", f"{g_ttfb:.3f}"))
    rows.append(("gateway CPU per request (ms)", "", f"{cpu_ms:.3f}"))
    rows.append(("gateway peak RSS (MiB)", "", f"{peak_rss_mib(pid):.1f}"))
    failures = sum(r["errors"] for r in (g64, gs))

    print(f"{'':34}{'direct':>12}{'gateway':>12}")
    for label, a, b in rows:
        print(f"{label:34}{a:>12}{b:>12}")
    print(
        f"added latency, 1 conn: p50 +{added[0]:.2f} ms, p99 +{added[1]:.2f} ms; "
        f"TTFB +{g_ttfb - d_ttfb:.3f} ms; non-2xx: {failures}"
    )


if __name__ == "__main__":
    main()
