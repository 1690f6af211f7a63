"""One JSON line per call on the `gateway.access` logger, written off the request path."""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Any

import orjson

from gateway.telemetry.events import CallRecord

access = logging.getLogger("gateway.access")
BATCH_PAUSE = 0.05  # seconds a line may wait for company


def log_line(record: CallRecord) -> dict[str, Any]:
    """The fields of the access log line: ids, route, status, timing, prompt, tokens. No secrets."""
    prompt = record.prompt
    line: dict[str, Any] = {
        "event": "call",
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "method": record.method,
        "route": "/v1" + record.route,
        "status": record.status,
        "duration_ms": round(record.duration_s * 1000, 3),
        "overhead_ms": round(record.overhead_ms, 3),
        "provider": record.provider,
        "model": record.response_model or record.request_model,
        "stream": record.stream,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
    }
    if record.usage_estimated:
        line["usage_estimated"] = True
    if record.cost_usd is not None:
        line["cost_usd"] = record.cost_usd
    if prompt is not None:
        line.update(
            prompt_name=prompt.name, prompt_version=prompt.version, prompt_variant=prompt.variant
        )
        if prompt.experiment_id:
            line["experiment"] = prompt.experiment_id
    if record.error_type is not None:
        line["error_type"] = record.error_type
    if record.client_disconnected:
        line["client_disconnected"] = True
    return line


class AccessLog:
    """An Observer that logs each call as one JSON line on `gateway.access`.

    The call path only queues the finished line; a daemon thread hands the lines to the logger,
    as many as have queued up in one record, so each call costs a queue put, not a log record.
    """

    def __init__(self) -> None:
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call_finished(self, record: CallRecord) -> None:
        self._lines.put(orjson.dumps(log_line(record)).decode())

    def start(self) -> None:
        """Send lines to stdout (unless the logger is configured otherwise) from a thread."""
        if not access.handlers:
            stream = logging.StreamHandler(sys.stdout)
            stream.setFormatter(logging.Formatter("%(message)s"))
            access.addHandler(stream)
            access.setLevel(logging.INFO)
            access.propagate = False
        self._thread = threading.Thread(target=self._write, name="access-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._thread is not None:
            self._lines.put(None)
            self._thread.join(5)
            self._thread = None

    def _write(self) -> None:
        # Lines are written in batches: after each write the thread pauses briefly so the next
        # lines gather, and one logging call carries them all. Woken per line, this thread cost
        # about 20 µs of CPU per call on the core the requests share.
        lines = self._lines
        while (line := lines.get()) is not None:
            batch = [line]
            stop = False
            while True:
                try:
                    more = lines.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            access.info("\n".join(batch))
            if stop:
                return
            time.sleep(BATCH_PAUSE)
