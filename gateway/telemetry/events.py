"""The record of one proxied call, and the Protocols of those who observe it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class PromptInfo:
    """Which managed prompt produced the call, and how it was chosen. Read-only by convention
    (not `frozen`: see CallRecord)."""

    name: str
    version: str
    number: int
    variant: str
    resolution: str
    experiment_id: str | None
    assignment: str | None
    template: str
    """The version's messages as JSON, placeholders and all (not user data)."""
    variables: Mapping[str, object]
    """Rendered-in values (text, or content parts); exported only when content capture is on."""
    replaced_system: int = 0
    """How many of the client's system/developer messages the prompt replaced."""
    adopted: bool = False
    """Served as an adopted prompt: the request named none, its system message matched the
    template of one (PRODUCT §14)."""


@dataclass(slots=True)
class CallRecord:
    """Everything known about one finished call. Built once; every observer reads the same, and
    none changes it.

    Not `frozen`: a frozen dataclass sets each field through `object.__setattr__`, which made
    building this record of 38 fields cost 6.6 µs per call (0.5 µs now); change one with
    `dataclasses.replace`.
    """

    request_id: str
    trace_id: str | None
    route: str
    """`/chat/completions`, `/responses`, ... (the path under /v1, without the query)."""
    method: str
    operation: str | None
    """The GenAI operation: `chat`, `embeddings`, `text_completion`, or None for other paths."""
    provider: str
    provider_system: str
    """gen_ai.provider.name: `openai`, `azure.ai.openai`, or the configured provider's name."""
    server_address: str
    server_port: int | None
    environment: str
    status: int
    error_type: str | None
    stream: bool
    request_model: str | None
    temperature: float | None
    max_tokens: int | None
    response_model: str | None
    response_id: str | None
    finish_reasons: tuple[str, ...]
    input_tokens: int | None
    output_tokens: int | None
    usage_estimated: bool
    cost_usd: float | None
    start_ns: int
    end_ns: int
    duration_s: float
    overhead_ms: float
    time_to_first_chunk_s: float | None
    client_disconnected: bool
    prompt: PromptInfo | None
    user_hash: str | None
    request_body: Mapping[str, Any] | None = None
    """The parsed request as sent upstream (messages, input, instructions); only with content
    capture."""
    output_text: str | None = None
    """The answer's text; only with content capture."""
    output_tool_calls: tuple[tuple[str | None, str, str], ...] = ()
    """(id, name, arguments JSON text) of each function call the answer asks for; only with
    content capture."""
    session_id: str | None = None
    """The client's conversation id (the `X-Session-Id` header), for `session.id`."""
    invocation_parameters: str | None = None
    """The request's model parameters as a JSON object (model, temperature, max_tokens, ...; no
    content), for OpenInference's `llm.invocation_parameters`; None when tracing is off."""
    input_cost_usd: float | None = None
    """The input tokens' share of cost_usd (cached input at its own rate)."""
    output_cost_usd: float | None = None
    """The output tokens' share of cost_usd."""
    system_texts: tuple[tuple[str, str], ...] = ()
    """(role, text) of the system/developer messages of an unmanaged call, only when adoption
    capture is on (for `recording.capture`; never exported)."""


class Observer(Protocol):
    """Told about every finished call; must not block (no I/O on the caller's thread)."""

    def call_finished(self, record: CallRecord) -> None:
        """Record the call."""
        ...


class BatchObserver(Protocol):
    """Told about the calls finished together (`GatewayService.settle`), in the order they
    finished; must not block. For an observer that keeps a few calls out of many: one call per
    batch, not one per call."""

    def calls_finished(self, records: Sequence[CallRecord]) -> None:
        """Record the calls."""
        ...


class SpanHandle(Protocol):
    """A span begun when the call arrived, ended with its record."""

    @property
    def trace_id(self) -> str:
        """The trace id, 32 hex digits, for logs."""
        ...

    @property
    def headers(self) -> Sequence[tuple[str, str]]:
        """W3C trace context to send to the provider (the gateway's own span as parent)."""
        ...

    def finish(self, record: CallRecord) -> None:
        """Set the attributes, status and events, and end the span at record.end_ns."""
        ...


class Tracer(Protocol):
    """Begins spans; the OTel implementation lives in telemetry/otel.py."""

    def begin(
        self, name: str, traceparent: str | None, tracestate: str | None, start_ns: int
    ) -> SpanHandle:
        """Begin a CLIENT span, a child of the incoming trace context when there is one."""
        ...

    def dropped_spans(self) -> int:
        """Spans lost so far (queue full or export failed)."""
        ...

    def shutdown(self) -> None:
        """Flush what is queued, within the SDK's timeout."""
        ...
