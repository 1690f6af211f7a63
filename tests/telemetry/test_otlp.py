"""The hand-written OTLP encoder, decoded by the official protobuf classes; samplers; contexts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from gateway.telemetry.attributes import SpanKind, call_attributes, metadata_head
from gateway.telemetry.events import CallRecord
from gateway.telemetry.otlp import (
    ExportSettings,
    OtlpExporter,
    Sampler,
    SpanBuffer,
    _add_call_attributes,
    _parse_traceparent,
    encode_attributes,
)
from tests.servers import OtlpReceiver
from tests.telemetry.test_attributes import RECORD


@pytest.fixture
def exporter() -> OtlpExporter:
    """An exporter whose thread never sends (nothing listens at port 9, and it waits an hour)."""
    return OtlpExporter(
        ExportSettings(
            endpoint="http://127.0.0.1:9/v1/traces",
            resource={"service.name": "t"},
            schedule_delay=3600,
        )
    )


def decode(exporter: OtlpExporter) -> trace_service_pb2.ExportTraceServiceRequest:
    message = trace_service_pb2.ExportTraceServiceRequest()
    message.ParseFromString(exporter.queued_request())
    return message


def test_span_round_trips_through_protobuf(exporter: OtlpExporter) -> None:
    """Every field the encoder writes decodes to the same value with the official classes."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    span = exporter.begin("chat gpt-4o-mini", parent, "k=v", 5)
    span.finish(replace(RECORD, start_ns=5, end_ns=9, error_type="429"))
    [decoded] = decode(exporter).resource_spans[0].scope_spans[0].spans
    assert decoded.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert decoded.parent_span_id.hex() == "b7ad6b7169203331"
    assert span.headers[0] == (
        "traceparent",
        f"00-{decoded.trace_id.hex()}-{decoded.span_id.hex()}-01",
    )
    assert (decoded.name, decoded.kind, decoded.trace_state) == ("chat gpt-4o-mini", 3, "k=v")
    assert (decoded.start_time_unix_nano, decoded.end_time_unix_nano) == (5, 9)
    assert (decoded.status.code, decoded.status.message) == (2, "429")
    attributes = {a.key: a.value for a in decoded.attributes}
    assert attributes["gen_ai.usage.input_tokens"].int_value == 10
    assert attributes["gen_ai.request.temperature"].double_value == 0.2
    assert attributes["gen_ai.prompt.name"].string_value == "support-agent"
    assert [
        v.string_value for v in attributes["gen_ai.response.finish_reasons"].array_value.values
    ] == ["stop"]
    assert decoded.events[0].name == "feature_flag.evaluation"


def test_memoized_and_fresh_encodings_agree(exporter: OtlpExporter) -> None:
    """The second span (from the memo) encodes exactly like the first."""
    for _ in range(2):
        exporter.begin("chat x", None, None, 1).finish(RECORD)
    first, second = decode(exporter).resource_spans[0].scope_spans[0].spans
    assert list(first.attributes) == list(second.attributes)


def test_unsampled_parent_is_propagated_not_recorded(exporter: OtlpExporter) -> None:
    """A caller that did not sample keeps flags 00 downstream and no span is queued."""
    span = exporter.begin(
        "chat x", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", None, 1
    )
    span.finish(RECORD)
    assert span.headers[0][1].endswith("-00")
    assert decode(exporter).resource_spans[0].scope_spans[0].spans == []


@pytest.mark.parametrize(
    ("name", "arg", "root", "parent_based"),
    [
        (None, None, 1.0, True),
        ("always_off", None, 0.0, False),
        ("traceidratio", "0.25", 0.25, False),
        ("parentbased_traceidratio", "2", 1.0, True),
        ("parentbased_always_off", None, 0.0, True),
    ],
)
def test_sampler_from_the_standard_variables(
    name: str | None, arg: str | None, root: float, parent_based: bool
) -> None:
    """OTEL_TRACES_SAMPLER and _ARG are read as the OTel spec defines them."""
    assert Sampler.parse(name, arg) == Sampler(root, parent_based)


def test_ratio_sampler_keeps_about_its_share() -> None:
    """traceidratio keeps about its share of random trace ids."""
    import random

    sampler = Sampler(0.25, False)
    kept = sum(sampler.sampled(random.randbytes(16), None) for _ in range(20_000))
    assert 4_400 < kept < 5_600


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-xyz",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ],
)
def test_malformed_traceparent_starts_a_new_trace(value: str) -> None:
    """An invalid traceparent is ignored, as W3C Trace Context requires."""
    assert _parse_traceparent(value) is None


def test_full_queue_drops_and_counts(exporter: OtlpExporter) -> None:
    """Past the queue bound spans are dropped, never blocking, and counted."""
    small = OtlpExporter(
        ExportSettings(
            endpoint="http://127.0.0.1:9/v1/traces", schedule_delay=3600, max_queue=3, max_batch=100
        )
    )
    for _ in range(5):
        small.begin("chat x", None, None, 1).finish(RECORD)
    assert (len(small._filling.ends), small.dropped_spans()) == (3, 2)


@pytest.mark.parametrize(
    "record",
    [
        RECORD,
        replace(
            RECORD,
            response_id=None,
            input_tokens=None,
            output_tokens=None,
            user_hash=None,
            session_id=None,
            prompt=None,
        ),
        replace(RECORD, cost_usd=None, time_to_first_chunk_s=0.125, output_tokens=0),
        replace(RECORD, output_tokens=None, input_cost_usd=None, output_cost_usd=None),
        replace(RECORD, request_id="r" * 300, input_tokens=2**40, response_id="é" * 70),
        replace(RECORD, request_id='q"\\é', session_id="s" * 200),
        replace(RECORD, operation="embeddings", invocation_parameters='{"dimensions":8}'),
        replace(RECORD, operation=None, invocation_parameters=None),
    ],
    ids=[
        "full",
        "sparse",
        "stream",
        "no-output",
        "long-values",
        "escaped-id",
        "embedding",
        "other",
    ],
)
@pytest.mark.parametrize("span_kind", ["llm", "proxy"])
def test_per_call_attributes_encode_like_the_generic_encoder(
    record: CallRecord, span_kind: SpanKind
) -> None:
    """The per-call fast path writes exactly what encoding the attribute dict would."""
    parts: list[bytes] = []
    _add_call_attributes(parts, record, span_kind == "llm", metadata_head(record))
    generic = call_attributes(record, capture_content=False, span_kind=span_kind)
    assert b"".join(parts) == encode_attributes(9, generic)


def test_span_buffer_batches_split_between_spans() -> None:
    """Spans of any size are kept whole, in order, in runs of at most the batch size."""
    spans = SpanBuffer(capacity=8)
    for size in (3, 10, 1, 7, 2):
        spans.add(bytes([size]) * size)
    assert spans.batches(2) == [(0, 13, 2), (13, 21, 2), (21, 23, 1)]
    assert bytes(spans.data[: spans.size]) == b"".join(bytes([n]) * n for n in (3, 10, 1, 7, 2))
    spans.clear()
    spans.add(b"x")
    assert (spans.batches(2), spans.data[:1]) == ([(0, 1, 1)], b"x")
    spans.add(bytes(200))
    spans.clear()
    assert len(spans.data) == 8  # grown past 16x by a large span: given back when emptied


def test_batches_reach_a_real_receiver_whole() -> None:
    """Five spans with a batch size of two arrive as three decodable exports, none lost."""
    receiver = OtlpReceiver()
    try:
        exporter = OtlpExporter(
            ExportSettings(endpoint=f"{receiver.url}/v1/traces", schedule_delay=3600, max_batch=2)
        )
        for n in range(5):
            exporter.begin("chat x", None, None, 1).finish(replace(RECORD, request_id=f"req_{n}"))
        exporter.shutdown(timeout=10)
    finally:
        receiver.stop()
    assert [len(body) > 0 for body in receiver.raw] == [True, True, True]
    ids = [span.attributes["gateway.request_id"] for span in receiver.spans]
    assert ids == [f"req_{n}" for n in range(5)]
    assert exporter.dropped_spans() == 0
