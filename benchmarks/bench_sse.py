"""The SSE tap alone: CPU per stream of `SSETap.feed` + `finish`, in one process, no sockets.

Streams of 20 text deltas, the finish event, the usage chunk and `[DONE]` (22 events):
- `bench`: the stream bench_proxy.py's nginx sends (no `"usage"` field in the deltas);
- `openai`: the same with `"usage":null` in every delta, as OpenAI sends when usage was asked.
Each fed whole (one chunk: what a fast provider or a buffering proxy delivers) and one event per
chunk (a provider trickling tokens), with the usage chunk stripped (the gateway asked for usage
on the client's behalf) and not. Medians of 7 rounds; a tight loop, so a running gateway pays
about twice these (benchmarks/README.md, issue 15).

Run: python benchmarks/bench_sse.py [--streams 5000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson
from bench_proxy import sse_body

from gateway.core.sse import SSETap


def openai_body() -> bytes:
    """The bench's stream with `"usage":null` in every event but the usage chunk's."""
    events = sse_body().encode().split(b"\n\n")
    marked = [
        e[:-1] + b',"usage":null}' if e.startswith(b"data: {") and b'"usage"' not in e else e
        for e in events
    ]
    return b"\n\n".join(marked)


def per_stream(chunks: list[bytes], strip: bool, streams: int) -> float:
    """µs of CPU to feed the chunks of one stream to a new tap and finish it."""
    started = time.process_time()
    for _ in range(streams):
        tap = SSETap(orjson.loads, strip_usage=strip)
        for chunk in chunks:
            tap.feed(chunk)
        tap.finish()
    return (time.process_time() - started) / streams * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5000, help="streams per round")
    args = parser.parse_args()
    print(f"{'stream':>8} {'chunks':>12} {'strip':>6} {'µs per stream':>14}")
    for name, body in (("bench", sse_body().encode()), ("openai", openai_body())):
        events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
        for shape, chunks in (("one", [body]), ("per event", events)):
            for strip in (True, False):
                per_stream(chunks, strip, args.streams // 5)  # warm up
                rounds = [per_stream(chunks, strip, args.streams) for _ in range(7)]
                print(f"{name:>8} {shape:>12} {strip!s:>6} {statistics.median(rounds):>14.1f}")


if __name__ == "__main__":
    main()
