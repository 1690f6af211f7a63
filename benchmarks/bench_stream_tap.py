"""What reading streams costs the running gateway: CPU per stream with the tap as built, read at
once, and not at all.

Three gateways (tracing on, the managed stream prompt, nginx's 20-event stream written event by
event, or with `--whole-stream` in one write; the usage chunk stripped) on core 0, each loaded in
turn by wrk at 8 connections, interleaved rounds:

- `deferred`: as built (DeferredTap: forwarded as it comes, read in `settle`);
- `at once`: every chunk read as it passes (SSETap in DeferredTap's place, as before);
- `no tap`: a tap that reads nothing (a fixed outcome): the gateway's cost without reading.

The variants are made by a `sitecustomize` on the gateways' PYTHONPATH (in a temporary folder).
CPU per stream moves between runs by about 10 µs (the machine, not the build): compare within a
run.

Run: python benchmarks/bench_stream_tap.py [--rounds 6] [--seconds 5] [--whole-stream]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
from pathlib import Path

from bench_proxy import (
    STREAM_BODY,
    cpu_seconds,
    free_port,
    require_tools,
    start_gateway,
    start_nginx,
    wrk,
)

VARIANTS = {"deferred": "", "at once": "at_once", "no tap": "no_tap"}

SITECUSTOMIZE = """
import os
variant = os.environ.get("BENCH_TAP_VARIANT")
if variant:
    import gateway.api.proxy as proxy
    from gateway.core.sse import Outcome, SSETap, Usage

    class AtOnce(SSETap):
        def read(self):
            return self.outcome

    class NoTap:
        def __init__(self, *args, **kwargs):
            self.outcome = Outcome("c1", "m", ["stop"], Usage(120, 19), complete=True)

        def feed(self, chunk):
            return chunk

        def finish(self):
            return b""

        def read(self):
            return self.outcome

    proxy.DeferredTap = AtOnce if variant == "at_once" else NoTap
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--whole-stream", action="store_true", help="one write per stream")
    args = parser.parse_args()
    require_tools()
    work = Path(tempfile.mkdtemp(prefix="gateway-tap-"))
    (work / "site").mkdir()
    (work / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    upstream = free_port()
    nginx = start_nginx(work, upstream, whole_stream=args.whole_stream)
    gateways = {}
    try:
        for name, variant in VARIANTS.items():
            os.environ["BENCH_TAP_VARIANT"] = variant
            os.environ["PYTHONPATH"] = str(work / "site")
            port = free_port()
            db = f"{variant or 'deferred'}.db"
            gateways[name] = (start_gateway(work, port, upstream, tracing=True, db=db), port)
        cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _, port in gateways.values():  # warm up
            wrk(work, f"http://127.0.0.1:{port}/v1/chat/completions", STREAM_BODY, 8, 2)
        print(f"{'round':>5} {'tap':>10} {'streams/s':>10} {'CPU per stream µs':>18}")
        for number in range(1, args.rounds + 1):
            for name, (process, port) in gateways.items():
                before = cpu_seconds(process.pid)
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                result = wrk(work, url, STREAM_BODY, 8, args.seconds)
                cpu[name].append((cpu_seconds(process.pid) - before) * 1e6 / result["total"])
                print(f"{number:>5} {name:>10} {result['rps']:>10,.0f} {cpu[name][-1]:>18.1f}")
        print(f"medians of {args.rounds} rounds")
        for name in VARIANTS:
            print(f"{'':>5} {name:>10} {'':>10} {statistics.median(cpu[name]):>18.1f}")
    finally:
        for process, _ in gateways.values():
            process.send_signal(signal.SIGINT)
            process.wait(15)
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
