"""The SSE tap alone: CPU per stream of `SSETap.feed` + `finish`, in one process, no sockets.

Streams of 20 text deltas, the finish event, the usage chunk and `[DONE]` (22 events):
- `bench`: the stream bench_proxy.py's nginx sends (no `"usage"` field in the deltas);
- `openai`: the same with `"usage":null` in every delta, as OpenAI sends when usage was asked.
Each fed whole (one chunk: what a fast provider or a buffering proxy delivers) and one event per
chunk (a provider trickling tokens), with the usage chunk stripped (the gateway asked for usage
on the client's behalf) and not. Three ways: `SSETap` reading every chunk as it passes (`at
once`); `DeferredTap` forwarding (`forward`: what the call pays while its answer goes out) and
then reading what it kept (`read`: what `settle` pays later). Medians of 7 rounds; a tight loop,
so a running gateway pays more (benchmarks/bench_stream_tap.py, benchmarks/README.md).

Run: python benchmarks/bench_sse.py [--streams 5000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import TypeVar

import orjson
from bench_proxy import sse_body

from gateway.core.sse import DeferredTap, SSETap

Tap = TypeVar("Tap", SSETap, DeferredTap)


def openai_body() -> bytes:
    """The bench's stream with `"usage":null` in every event but the usage chunk's."""
    events = sse_body().encode().split(b"\n\n")
    marked = [
        e[:-1] + b',"usage":null}' if e.startswith(b"data: {") and b'"usage"' not in e else e
        for e in events
    ]
    return b"\n\n".join(marked)


def per_stream(chunks: list[bytes], strip: bool, streams: int) -> tuple[float, float, float]:
    """µs of CPU per stream: SSETap fed every chunk and finished; DeferredTap fed and finished
    (forwarding); DeferredTap read."""
    started = time.process_time()
    for _ in range(streams):
        _fed(SSETap(orjson.loads, strip_usage=strip), chunks)
    at_once = time.process_time() - started
    started = time.process_time()
    deferred = [_fed(DeferredTap(orjson.loads, strip_usage=strip), chunks) for _ in range(streams)]
    forward = time.process_time() - started
    started = time.process_time()
    for kept in deferred:
        kept.read()
    read = time.process_time() - started
    return at_once / streams * 1e6, forward / streams * 1e6, read / streams * 1e6


def _fed(tap: Tap, chunks: list[bytes]) -> Tap:
    """`tap` fed every chunk, then finished."""
    for chunk in chunks:
        tap.feed(chunk)
    tap.finish()
    return tap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5000, help="streams per round")
    args = parser.parse_args()
    print(f"{'stream':>8} {'chunks':>10} {'strip':>6} {'at once':>8} {'forward':>8} {'read':>8}")
    for name, body in (("bench", sse_body().encode()), ("openai", openai_body())):
        events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
        for shape, chunks in (("one", [body]), ("per event", events)):
            for strip in (True, False):
                per_stream(chunks, strip, args.streams // 5)  # warm up
                rounds = [per_stream(chunks, strip, args.streams) for _ in range(7)]
                medians = [statistics.median(r[i] for r in rounds) for i in range(3)]
                figures = " ".join(f"{m:>8.1f}" for m in medians)
                print(f"{name:>8} {shape:>10} {strip!s:>6} {figures}  µs per stream", flush=True)


if __name__ == "__main__":
    main()
