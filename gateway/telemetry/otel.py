"""OpenTelemetry export: the only module that imports OpenTelemetry.

The SDK reads the standard variables itself: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT and _HEADERS,
OTEL_TRACES_SAMPLER(_ARG), OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, OTEL_BSP_*. Spans leave
through a batch processor on its own thread, so a slow or absent collector never delays a request;
spans it has to drop are counted.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.settings import TelemetrySettings
from gateway.telemetry.attributes import feature_flag_event, span_attributes
from gateway.telemetry.events import CallRecord

_PROPAGATOR = TraceContextTextMapPropagator()


class _CountingExporter(SpanExporter):
    """Counts spans whose export failed (collector down, refused, timed out)."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _CountingBatchProcessor(SpanProcessor):
    """A BatchSpanProcessor that also counts spans dropped because its queue was full."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._inner = BatchSpanProcessor(exporter)
        self.queue_full = 0
        # The SDK keeps its queue private; without it we count export failures only.
        batch = getattr(self._inner, "_batch_processor", None)
        self._queue: Any = getattr(batch, "_queue", None)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen:
            self.queue_full += 1
        self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class OtelSpan:
    """One CLIENT span, begun at arrival and ended with the call's record."""

    __slots__ = ("_capture", "_span", "headers", "trace_id")
    headers: list[tuple[str, str]]
    trace_id: str

    def __init__(self, span: Any, capture_content: bool) -> None:
        self._span = span
        self._capture = capture_content
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        self.headers = list(carrier.items())
        self.trace_id = format(span.get_span_context().trace_id, "032x")

    def finish(self, record: CallRecord) -> None:
        span = self._span
        span.set_attributes(span_attributes(record, capture_content=self._capture))
        event = feature_flag_event(record)
        if event is not None:
            span.add_event("feature_flag.evaluation", event, timestamp=record.start_ns)
        if record.error_type is not None:
            span.set_status(Status(StatusCode.ERROR, record.error_type))
        span.end(end_time=record.end_ns)


class OtelTracer:
    """Spans to an OTLP/HTTP (protobuf) endpoint, configured by the standard variables."""

    def __init__(
        self, settings: TelemetrySettings, *, environment: str, exporter: SpanExporter | None = None
    ) -> None:
        attributes = dict(settings.resource)
        attributes["deployment.environment.name"] = environment
        self._provider = TracerProvider(resource=Resource.create(attributes))
        exporter = exporter or OTLPSpanExporter(
            endpoint=settings.traces_endpoint, headers=dict(settings.headers) or None
        )
        self._exporter = _CountingExporter(exporter)
        self._processor = _CountingBatchProcessor(self._exporter)
        self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("prompt-gateway")
        self._capture = settings.capture_content

    def begin(
        self, name: str, traceparent: str | None, tracestate: str | None, start_ns: int
    ) -> OtelSpan:
        context = None
        if traceparent:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            context = _PROPAGATOR.extract(carrier)
        span = self._tracer.start_span(
            name, context=context, kind=SpanKind.CLIENT, start_time=start_ns
        )
        return OtelSpan(span, self._capture)

    def dropped_spans(self) -> int:
        return self._exporter.failed + self._processor.queue_full

    def shutdown(self, timeout: float = 3.0) -> None:
        """Flush queued spans, waiting at most `timeout` seconds for a slow or dead collector."""
        worker = threading.Thread(target=self._provider.shutdown, name="otel-shutdown", daemon=True)
        worker.start()
        worker.join(timeout)
