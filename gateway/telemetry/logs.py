"""One JSON line per call on the `gateway.access` logger, written off the request path."""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from typing import Any

import orjson

from gateway.telemetry.events import CallRecord

access = logging.getLogger("gateway.access")


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
    """An Observer that logs each call as one JSON line."""

    def call_finished(self, record: CallRecord) -> None:
        if access.isEnabledFor(logging.INFO):
            access.info(orjson.dumps(log_line(record)).decode())


def install_json_access_log() -> logging.handlers.QueueListener:
    """Send gateway.access lines to stdout through a queue, so a call never waits on the write."""
    channel: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(channel, stream)
    access.handlers[:] = [logging.handlers.QueueHandler(channel)]
    access.setLevel(logging.INFO)
    access.propagate = False
    listener.start()
    return listener
