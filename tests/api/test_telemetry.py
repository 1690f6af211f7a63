"""Tracing, metrics and logs end to end: spans decoded by a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import openai
import orjson
import pytest

from gateway import service
from gateway.core.experiments import in_treatment
from gateway.telemetry.attributes import hash_user
from tests.api.conftest import MakeGateway
from tests.servers import FakeProvider, OtlpReceiver, ReceivedSpan, ServedGateway
from tests.telemetry import conventions

KEY = "sk-secret-client-key-777"
VARIABLES = {"company": "Acme", "timezone": "UTC", "tools": "search"}
CLIENT_KIND = 3  # SPAN_KIND_CLIENT in OTLP
STATUS_ERROR = 2


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver for this module's gateways."""
    sink = OtlpReceiver()
    yield sink
    sink.stop()


FAST = {"OTEL_BSP_SCHEDULE_DELAY": "50"}  # export every 50 ms


@pytest.fixture(scope="module")
def traced(make_gateway: MakeGateway, receiver: OtlpReceiver) -> ServedGateway:
    """A gateway exporting spans to the receiver, content capture off."""
    return make_gateway(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_SERVICE_NAME="gateway-under-test", **FAST
    )


@pytest.fixture(scope="module")
def captured(make_gateway: MakeGateway, receiver: OtlpReceiver) -> ServedGateway:
    """A gateway exporting spans to the receiver, content capture on."""
    return make_gateway(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true",
        **FAST,
    )


def sdk(gateway: ServedGateway, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, **kwargs)  # type: ignore[arg-type]


def managed(gateway: ServedGateway, prompt: dict[str, object], **kwargs: object) -> str:
    """Make a managed call; return its request id."""
    with sdk(gateway, **kwargs) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"prompt": prompt},
        )
        return raw.headers["x-request-id"]


def test_managed_call_span(traced: ServedGateway, receiver: OtlpReceiver) -> None:
    """A managed call's span carries the GenAI, gateway, Langfuse and OpenInference attributes."""
    request_id = managed(
        traced,
        {"id": "support-agent", "variables": VARIABLES},
        default_headers={"X-User-Id": "alice"},
    )
    span = receiver.wait_for(request_id)
    a = span.attributes
    assert (span.name, span.kind, span.parent_span_id) == ("chat gpt-4o-mini", CLIENT_KIND, "")
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "default"
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("gpt-4o-mini", "gpt-4o-mini")
    assert (a["gen_ai.request.temperature"], a["gen_ai.request.max_tokens"]) == (0.2, 512)
    assert a["gen_ai.response.id"] == "chatcmpl-fake"
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (11, 3)
    assert a["server.address"] == "127.0.0.1" and isinstance(a["server.port"], int)
    assert a["gateway.cost.usd"] == pytest.approx((11 * 0.15 + 3 * 0.60) / 1e6)
    assert "gateway.usage.estimated" not in a
    for key in ("gen_ai.prompt.name", "gateway.prompt.name", "langfuse.observation.prompt.name"):
        assert a[key] == "support-agent"
    for key in ("gen_ai.prompt.version", "gateway.prompt.version", "llm.prompt_template.version"):
        assert a[key] == "1.1.0"
    assert a["langfuse.observation.prompt.version"] == 2
    assert (a["gateway.prompt.variant"], a["gateway.prompt.resolution"]) == ("none", "environment")
    assert a["gateway.environment"] == "production"
    assert "{{company}}" in a["llm.prompt_template.template"]
    assert a["user.id"] == hash_user("alice") and "alice" not in a["user.id"]
    assert "llm.prompt_template.variables" not in a and "gen_ai.input.messages" not in a
    assert span.resource["service.name"] == "gateway-under-test"
    assert span.resource["deployment.environment.name"] == "production"


def test_pinned_version_span(traced: ServedGateway, receiver: OtlpReceiver) -> None:
    """A version pinned in the request is resolution `pinned`."""
    request_id = managed(
        traced, {"id": "support-agent", "version": "1.0.0", "variables": VARIABLES}
    )
    a = receiver.wait_for(request_id).attributes
    assert (a["gateway.prompt.version"], a["gateway.prompt.resolution"]) == ("1.0.0", "pinned")
    assert a["langfuse.observation.prompt.version"] == 1


def test_override_span(make_gateway: MakeGateway, receiver: OtlpReceiver) -> None:
    """A PROMPT_OVERRIDES version is resolution `override`."""
    gateway = make_gateway(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        PROMPT_OVERRIDES='{"support-agent": "1.0.0"}',
        **FAST,
    )
    request_id = managed(gateway, {"id": "support-agent", "variables": VARIABLES})
    a = receiver.wait_for(request_id, timeout=15).attributes
    assert (a["gateway.prompt.version"], a["gateway.prompt.resolution"]) == ("1.0.0", "override")


@pytest.mark.parametrize("variant", ["control", "treatment"])
def test_experiment_spans(traced: ServedGateway, receiver: OtlpReceiver, variant: str) -> None:
    """Both arms carry the experiment, the assignment and a feature_flag.evaluation event."""
    user = next(
        f"u{i}"
        for i in range(100)
        if in_treatment(f"u{i}", "ab-test", 0.5) == (variant == "treatment")
    )
    request_id = managed(
        traced,
        {"id": "ab-prompt", "variables": {"company": "A"}},
        default_headers={"X-User-Id": user},
    )
    span = receiver.wait_for(request_id)
    a = span.attributes
    assert (a["gateway.prompt.variant"], a["gateway.prompt.resolution"]) == (variant, "experiment")
    assert (a["gateway.experiment.id"], a["gateway.experiment.assignment"]) == ("ab-test", "user")
    assert a["gateway.prompt.version"] == ("2.0.0" if variant == "treatment" else "1.0.0")
    assert span.events == [
        (
            "feature_flag.evaluation",
            {
                "feature_flag.key": "ab-test",
                "feature_flag.result.variant": variant,
                "feature_flag.result.reason": "split",
                "feature_flag.provider.name": "prompt-gateway",
            },
        )
    ]


def test_unmanaged_call_span(traced: ServedGateway, receiver: OtlpReceiver) -> None:
    """An unmanaged call is traced too, with no prompt attributes."""
    response = httpx.post(
        traced.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}
    )
    a = receiver.wait_for(response.headers["x-request-id"]).attributes
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    tokens_and_cost = {"llm.token_count.prompt", "llm.cost.prompt"}
    assert not [k for k in a if "prompt" in k and k not in tokens_and_cost]


def test_streaming_span_ends_with_the_stream(traced: ServedGateway, receiver: OtlpReceiver) -> None:
    """A stream's span has the usage the gateway asked for and the time to first chunk."""
    with sdk(traced) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[],
            stream=True,
            extra_body={"prompt": {"id": "support-agent", "variables": VARIABLES}},
        )
        chunks = list(raw.parse())
    assert chunks
    a = receiver.wait_for(raw.headers["x-request-id"]).attributes
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (11, 5)
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < 5
    assert a["gateway.stream"] is True


def test_client_hang_up_ends_the_span(
    traced: ServedGateway, receiver: OtlpReceiver, provider: FakeProvider
) -> None:
    """A stream the client abandons still ends its span, marked as disconnected."""
    body = b'{"model":"hang-stream","messages":[],"stream":true}'
    with httpx.stream("POST", traced.url + "/v1/chat/completions", content=body) as response:
        next(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    a = receiver.wait_for(request_id).attributes
    assert a["gateway.client_disconnected"] is True


def test_provider_error_sets_status_and_error_type(
    traced: ServedGateway, receiver: OtlpReceiver
) -> None:
    """A provider's 429 marks the span as an error with error.type 429."""
    response = httpx.post(
        traced.url + "/v1/chat/completions", json={"model": "error-429", "messages": []}
    )
    span = receiver.wait_for(response.headers["x-request-id"])
    assert (span.status_code, span.attributes["error.type"]) == (STATUS_ERROR, "429")


def test_gateway_error_is_traced(traced: ServedGateway, receiver: OtlpReceiver) -> None:
    """A request the gateway refuses gets a span with the error code as error.type."""
    response = httpx.post(
        traced.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [], "prompt": {"id": "support-agent"}},
    )
    span = receiver.wait_for(response.headers["x-request-id"])
    assert span.attributes["error.type"] == "missing_prompt_variables"
    assert span.status_code == STATUS_ERROR


def test_trace_context_flows_through(
    traced: ServedGateway, receiver: OtlpReceiver, provider: FakeProvider
) -> None:
    """The span is a child of the incoming traceparent, and the provider gets the span's."""
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    response = httpx.post(
        traced.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": []},
        headers={"traceparent": f"00-{trace_id}-{parent}-01", "tracestate": "vendor=1"},
    )
    span = receiver.wait_for(response.headers["x-request-id"])
    assert (span.trace_id, span.parent_span_id) == (trace_id, parent)
    sent = provider.last().headers["traceparent"]
    assert sent == f"00-{trace_id}-{span.span_id}-01"


def test_estimated_usage_when_the_provider_reports_none(
    traced: ServedGateway, receiver: OtlpReceiver
) -> None:
    """No usage from the provider: tokens are counted locally and the span says so."""
    response = httpx.post(
        traced.url + "/v1/chat/completions",
        json={"model": "no-usage", "messages": [{"role": "user", "content": "count these words"}]},
    )
    a = receiver.wait_for(response.headers["x-request-id"]).attributes
    assert a["gateway.usage.estimated"] is True
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0


def test_content_is_captured_only_when_asked(
    make_gateway: MakeGateway, receiver: OtlpReceiver
) -> None:
    """With capture on, messages, output and variables are recorded; keys never are."""
    gateway = make_gateway(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true",
        **FAST,
    )
    request_id = managed(gateway, {"id": "support-agent", "variables": VARIABLES})
    a = receiver.wait_for(request_id, timeout=15).attributes
    assert orjson.loads(a["llm.prompt_template.variables"]) == VARIABLES
    assert "support agent of Acme" in a["gen_ai.system_instructions"]
    assert "echo: Hi" in a["gen_ai.output.messages"]
    assert all(KEY.encode() not in export for export in receiver.raw)


def test_logs_carry_request_and_trace_ids_and_no_secrets(
    traced: ServedGateway, receiver: OtlpReceiver
) -> None:
    """One JSON line per call with the request id and trace id together, and no key."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("gateway.access")
    logger.addHandler(handler)
    try:
        request_id = managed(traced, {"id": "support-agent", "variables": VARIABLES})
        span = receiver.wait_for(request_id)
        deadline = time.monotonic() + 5
        while request_id not in stream.getvalue():
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        logger.removeHandler(handler)
    line = next(orjson.loads(x) for x in stream.getvalue().splitlines() if request_id in x)
    assert (line["request_id"], line["trace_id"]) == (request_id, span.trace_id)
    assert (line["prompt_name"], line["prompt_version"], line["status"]) == (
        "support-agent",
        "1.1.0",
        200,
    )
    assert KEY not in stream.getvalue()


def test_metrics_are_prometheus_text(traced: ServedGateway) -> None:
    """/metrics exposes request counts with prompt labels, histograms and token counters."""
    managed(traced, {"id": "support-agent", "variables": VARIABLES})
    text = httpx.get(traced.url + "/metrics").text
    assert "# TYPE gateway_requests_total counter" in text
    assert (
        'gateway_requests_total{route="/chat/completions",status="200",provider="default",'
        'model="gpt-4o-mini",prompt_name="support-agent",prompt_version="1.1.0",'
        'variant="none"}'
    ) in text
    assert 'gateway_request_duration_seconds_bucket{route="/chat/completions"' in text
    assert "gateway_overhead_seconds_count" in text
    assert 'gateway_tokens_total{direction="input"' in text
    assert "gateway_spans_dropped_total" in text
    assert "req_" not in text, "no request ids as labels"


def test_metrics_count_each_call_the_moment_it_returns(
    make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call's record is made a moment after its answer (`GatewayService.settle`), but /metrics
    settles first: read right after each call (here the moment is a minute long), the request
    count has moved by exactly one."""
    monkeypatch.setattr(service, "SETTLE_DELAY", 60.0)
    gateway = make_gateway()
    for n in range(1, 4):
        managed(gateway, {"id": "support-agent", "version": "1.0.0", "variables": VARIABLES})
        assert requests_counted(gateway, "1.0.0") == n


def test_finished_calls_are_settled_a_slice_per_turn_of_the_loop() -> None:
    """Settled by its timer, the backlog goes SETTLE_SLICE calls (or a quarter, when more) per
    turn of the event loop, in the order the calls finished, and the loop runs what else is
    ready between two slices (a request that arrived meanwhile waits for one slice only)."""
    slices: list[list[int]] = []
    between: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stub = SimpleNamespace(_finished=list(range(40)), _settle_at=None)
        stub._settle = lambda finished: slices.append(list(finished))
        stub._settle_slice = functools.partial(service.GatewayService._settle_slice, stub)
        stub._settle_slice()
        for _ in range(6):  # something else ready each turn: it runs between the slices
            loop.call_soon(lambda: between.append(len(slices)))
            await asyncio.sleep(0)
        assert stub._finished == [] and stub._settle_at is None

    asyncio.run(main())
    assert [len(part) for part in slices] == [10, 8, 8, 8, 6]
    assert [n for part in slices for n in part] == list(range(40))
    # One slice per turn (the second was scheduled before the first callback was).
    assert between[:4] == [2, 3, 4, 5]


def requests_counted(gateway: ServedGateway, version: str) -> float:
    """`gateway_requests_total` of calls served by `version` of the prompt, as /metrics reads."""
    for line in httpx.get(gateway.url + "/metrics").text.splitlines():
        if line.startswith("gateway_requests_total{") and f'prompt_version="{version}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_bug_in_a_record_or_a_span_never_reaches_a_call_nor_loses_others(
    make_gateway: MakeGateway,
    receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Calls finished together are recorded one by one: when building one call's record fails,
    that call still answers 200 and the calls around it are counted; when only ending a span
    fails, the call's metrics still count it."""
    gateway = make_gateway(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, **FAST)
    record = service.GatewayService._record

    def broken_record(self: service.GatewayService, call: service.Call, *args: object) -> object:
        if call.request_id.endswith("-broken"):
            raise RuntimeError("a bug in the record")
        return record(self, call, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(service.GatewayService, "_record", broken_record)
    prompt = {"id": "support-agent", "version": "1.0.0", "variables": VARIABLES}
    for n in range(3):
        with sdk(gateway, default_headers={"X-Request-Id": f"req-{n}-broken"}) as client:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}],
                extra_body={"prompt": prompt},
            )  # fmt: skip
        managed(gateway, prompt)
    assert requests_counted(gateway, "1.0.0") == 3  # the three calls between the broken ones
    monkeypatch.undo()

    def broken_span(self: object, record: object) -> None:
        raise RuntimeError("a bug in the span")

    monkeypatch.setattr("gateway.telemetry.otlp.OtlpSpan.finish", broken_span)
    prompt = {"id": "support-agent", "version": "1.1.0", "variables": VARIABLES}
    for _ in range(2):
        managed(gateway, prompt)
    assert requests_counted(gateway, "1.1.0") == 2


def test_refused_collector_never_fails_or_delays_a_request(make_gateway: MakeGateway) -> None:
    """With the OTLP endpoint refusing connections, calls succeed on time; drops are counted."""
    gateway = make_gateway(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_EXPORTER_OTLP_TIMEOUT="1", **FAST
    )
    slowest = 0.0
    for _ in range(20):
        started = time.monotonic()
        response = httpx.post(
            gateway.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}
        )
        slowest = max(slowest, time.monotonic() - started)
        assert response.status_code == 200
    # A call that waited on an export would take the export timeout (1 s) at least.
    assert slowest < 0.9, f"a call took {slowest:.2f} s"


# ---- what Phoenix (OpenInference) and Langfuse read -----------------------------------------


def call_kind(gateway: ServedGateway, receiver: OtlpReceiver, kind: str) -> ReceivedSpan:
    """Make one call of a kind (chat, stream, responses, embeddings) with the OpenAI SDK, in a
    session; return its span as the receiver decoded it."""
    with sdk(gateway, default_headers={"X-Session-Id": "conversation-42"}) as client:
        prompt = {"prompt": {"id": "support-agent", "variables": VARIABLES}}
        if kind == "chat":
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], extra_body=prompt
            )
        elif kind == "stream":
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                extra_body=prompt,
            )
            assert list(raw.parse())
        elif kind == "responses":
            raw = client.responses.with_raw_response.create(
                model="gpt-4o-mini", instructions="Answer briefly.", input="Hi there"
            )
        else:
            raw = client.embeddings.with_raw_response.create(
                model="text-embedding-3-small", input="embed this"
            )
    return receiver.wait_for(raw.headers["x-request-id"], timeout=15)


KINDS = ["chat", "stream", "responses", "embeddings"]


@pytest.mark.parametrize("kind", KINDS)
def test_backend_attributes_without_capture(
    traced: ServedGateway, receiver: OtlpReceiver, kind: str
) -> None:
    """Capture off: OpenInference kind, model, parameters, tokens and cost, Langfuse cost and
    metadata, and the session, for every kind of call; no message content anywhere."""
    span = call_kind(traced, receiver, kind)
    a = span.attributes
    expected = (
        conventions.OPENINFERENCE_EMBEDDING
        if kind == "embeddings"
        else (conventions.OPENINFERENCE_LLM)
    )
    conventions.check_types(a, expected | conventions.LANGFUSE)
    assert a["openinference.span.kind"] == ("EMBEDDING" if kind == "embeddings" else "LLM")
    assert a["session.id"] == "conversation-42"
    total = a["gen_ai.usage.input_tokens"] + a.get("gen_ai.usage.output_tokens", 0)
    assert a["llm.token_count.total"] == total
    assert a["gen_ai.usage.cost"] == a["gateway.cost.usd"]
    metadata = orjson.loads(a["metadata"])
    assert metadata["request_id"] == a["gateway.request_id"]
    assert metadata["environment"] == a["langfuse.observation.metadata.environment"]
    if kind in ("chat", "stream"):
        conventions.check_types(a, conventions.LANGFUSE_PROMPT_METADATA)
        assert (metadata["prompt_name"], metadata["prompt_version"]) == ("support-agent", "1.1.0")
        assert a["langfuse.observation.metadata.resolution"] == "environment"
        assert orjson.loads(a["llm.invocation_parameters"])["temperature"] == 0.2
    if kind == "stream":
        conventions.check_completion_start(a, span.start_ns)
    else:
        assert "langfuse.observation.completion_start_time" not in a
    if kind == "responses":
        assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert conventions.content_attributes(a) == []
    assert conventions.validate_messages(a) == []


@pytest.mark.parametrize("kind", KINDS)
def test_backend_content_with_capture(
    captured: ServedGateway, receiver: OtlpReceiver, kind: str
) -> None:
    """Capture on: GenAI messages valid against OpenTelemetry's schemas, and OpenInference's
    input/output values and flattened messages, for every kind of call."""
    a = call_kind(captured, receiver, kind).attributes
    if kind == "embeddings":
        assert (a["input.value"], a["input.mime_type"]) == ("embed this", "text/plain")
        assert a["embedding.embeddings.0.embedding.text"] == "embed this"
        assert conventions.validate_messages(a) == []
        return
    assert conventions.validate_messages(a) == list(conventions.MESSAGE_SCHEMAS)
    conventions.check_types(a, conventions.OPENINFERENCE_CONTENT)
    system = orjson.loads(a["gen_ai.system_instructions"])
    inputs = conventions.openinference_messages(a, "input")
    outputs = conventions.openinference_messages(a, "output")
    [output] = orjson.loads(a["gen_ai.output.messages"])
    assert output["finish_reason"] == "stop"
    assert outputs == [{"role": "assistant", "content": a["output.value"]}]
    assert output["parts"] == [{"type": "text", "content": a["output.value"]}]
    assert orjson.loads(a["input.value"]) == inputs
    if kind == "responses":
        assert system == [{"type": "text", "content": "Answer briefly."}]
        assert inputs[1:] == [{"role": "user", "content": "Hi there"}]
        assert a["output.value"] == "fake answer"
    else:
        assert "support agent of Acme" in system[0]["content"]
        assert inputs[0]["role"] == "system" and inputs[-1] == {"role": "user", "content": "Hi"}
        assert orjson.loads(a["gen_ai.input.messages"])[-1] == {
            "role": "user",
            "parts": [{"type": "text", "content": "Hi"}],
        }
    if kind == "stream":
        assert a["output.value"] == "Hello from the fake provider"


def test_proxy_span_kind_end_to_end(make_gateway: MakeGateway, receiver: OtlpReceiver) -> None:
    """telemetry.span_kind proxy: the span is a CHAIN hop with no llm.* tokens or cost and no
    gen_ai.usage.* for backends to add to the application's own LLM span."""
    gateway = make_gateway(
        "telemetry:\n  span_kind: proxy\n", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, **FAST
    )
    request_id = managed(gateway, {"id": "support-agent", "variables": VARIABLES})
    a = receiver.wait_for(request_id, timeout=15).attributes
    assert a["openinference.span.kind"] == "CHAIN"
    assert not [k for k in a if k.startswith(("llm.token_count", "llm.cost", "gen_ai.usage"))]
    assert "llm.model_name" not in a
    assert (a["gateway.usage.input_tokens"], a["gateway.usage.output_tokens"]) == (11, 3)
    assert a["gen_ai.request.model"] == "gpt-4o-mini" and "gateway.cost.usd" in a
    assert orjson.loads(a["metadata"])["prompt_name"] == "support-agent"


def test_session_header_is_not_forwarded(
    traced: ServedGateway, receiver: OtlpReceiver, provider: FakeProvider
) -> None:
    """X-Session-Id is the gateway's to read, like X-User-Id: the provider never sees it."""
    call_kind(traced, receiver, "chat")
    assert "x-session-id" not in provider.last().headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("café-sess".encode(), "café-sess"),  # UTF-8, as clients send it
        ("café".encode("latin-1"), "café"),  # not UTF-8: read as latin-1
    ],
    ids=["utf-8", "latin-1"],
)
def test_session_id_is_decoded_and_stripped(
    traced: ServedGateway, receiver: OtlpReceiver, header: bytes, expected: str
) -> None:
    """X-Session-Id's bytes are UTF-8 (latin-1 when invalid). (Stripping is tested on
    service.session_id: httpx refuses to send a padded header.)"""
    response = httpx.post(
        traced.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"X-Session-Id": header, "Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 200
    span = receiver.wait_for(response.headers["x-request-id"], timeout=15)
    assert span.attributes["session.id"] == expected


PARIS = {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}


@pytest.mark.parametrize("kind", ["chat", "stream", "responses", "responses-stream"])
def test_captured_tool_calls(captured: ServedGateway, receiver: OtlpReceiver, kind: str) -> None:
    """An answer that asks for function calls: tool_call parts in gen_ai.output.messages (valid
    against OpenTelemetry's schema), OpenInference's tool_calls attributes, and output.value the
    assistant message as JSON, streamed or not."""
    weather = [{"role": "user", "content": "Weather in Paris?"}]
    with sdk(captured) as client:
        if kind in ("chat", "stream"):
            raw = client.chat.completions.with_raw_response.create(
                model="tool-call", messages=weather, stream=kind == "stream"
            )
        else:
            raw = client.responses.with_raw_response.create(
                model="tool-call", input="Weather in Paris?", stream=kind == "responses-stream"
            )
        if kind.endswith("stream"):
            assert list(raw.parse())  # type: ignore[call-overload]
    a = receiver.wait_for(raw.headers["x-request-id"], timeout=15).attributes
    assert "gen_ai.output.messages" in conventions.validate_messages(a)
    [output] = orjson.loads(a["gen_ai.output.messages"])
    assert output["finish_reason"] == "tool_call"
    calls = [PARIS]
    if kind == "stream":  # the fake provider streams a second call
        calls.append({**PARIS, "id": "call_2", "arguments": {"city": "Rome"}})
    assert output["parts"] == calls
    head = "llm.output_messages.0.message.tool_calls"
    for j, call in enumerate(calls):
        assert a[f"{head}.{j}.tool_call.id"] == call["id"]
        assert a[f"{head}.{j}.tool_call.function.name"] == "get_weather"
        assert orjson.loads(a[f"{head}.{j}.tool_call.function.arguments"]) == call["arguments"]
    assert f"{head}.{len(calls)}.tool_call.function.name" not in a
    assert a["output.mime_type"] == "application/json"
    value = orjson.loads(a["output.value"])
    assert value["tool_calls"][0]["function"]["name"] == "get_weather"


def test_tool_calls_not_kept_without_capture(traced: ServedGateway, receiver: OtlpReceiver) -> None:
    """Capture off: no tool call, name or arguments leaves the gateway."""
    with sdk(traced) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="tool-call", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        assert list(raw.parse())
    a = receiver.wait_for(raw.headers["x-request-id"], timeout=15).attributes
    assert conventions.content_attributes(a) == []
    assert not [k for k in a if "tool_call" in k]
    assert a["gen_ai.response.finish_reasons"] == ["tool_calls"]
