"""CallRecord -> span attributes: names and redaction pinned without any exporter."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from gateway.telemetry.attributes import (
    feature_flag_event,
    hash_user,
    invocation_parameters,
    iso_time,
    provider_system,
    span_attributes,
    span_name,
)
from gateway.telemetry.events import CallRecord, PromptInfo
from tests.telemetry import conventions

PROMPT = PromptInfo(
    name="support-agent",
    version="1.2.0",
    number=3,
    variant="treatment",
    resolution="experiment",
    experiment_id="exp-1",
    assignment="user",
    template='[{"role":"system","content":"Hi {{company}}"}]',
    variables={"company": "Acme"},
)
RECORD = CallRecord(
    request_id="req_1",
    trace_id=None,
    route="/chat/completions",
    method="POST",
    operation="chat",
    provider="openai",
    provider_system="openai",
    server_address="api.openai.com",
    server_port=443,
    environment="production",
    status=200,
    error_type=None,
    stream=False,
    request_model="gpt-4o-mini",
    temperature=0.2,
    max_tokens=512,
    response_model="gpt-4o-mini-2024-07-18",
    response_id="chatcmpl-1",
    finish_reasons=("stop",),
    input_tokens=10,
    output_tokens=5,
    usage_estimated=False,
    cost_usd=0.00001,
    start_ns=1,
    end_ns=2,
    duration_s=0.5,
    overhead_ms=0.2,
    time_to_first_chunk_s=None,
    client_disconnected=False,
    prompt=PROMPT,
    user_hash=hash_user("alice"),
    request_body={
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are the support agent of Acme."},
            {"role": "user", "content": "secret question"},
        ],
        "temperature": 0.2,
    },
    output_text="answer",
    session_id="conversation-7",
    invocation_parameters='{"model":"gpt-4o-mini","temperature":0.2}',
    input_cost_usd=0.000004,
    output_cost_usd=0.000006,
)


@pytest.mark.parametrize(
    ("operation", "model", "expected"),
    [
        ("chat", "gpt-4o", "chat gpt-4o"),
        ("embeddings", "te-3", "embeddings te-3"),
        ("chat", None, "chat"),
        (None, None, "GET /v1/models"),
    ],
)
def test_span_names(operation: str | None, model: str | None, expected: str) -> None:
    """`{operation} {model}` per the GenAI conventions; method and path elsewhere."""
    assert span_name(operation, model, "GET", "/models") == expected


@pytest.mark.parametrize(
    ("name", "address", "expected"),
    [
        ("main", "api.openai.com", "openai"),
        ("az", "x.openai.azure.com", "azure.ai.openai"),
        ("local", "127.0.0.1", "local"),
    ],
)
def test_provider_system(name: str, address: str, expected: str) -> None:
    """Well-known hosts get their GenAI provider name; others the configured name."""
    assert provider_system(name, address) == expected


def test_contract_attributes_are_present() -> None:
    """Every attribute PRODUCT §8 names is set from the record."""
    a = span_attributes(RECORD, capture_content=False)
    assert a["gen_ai.prompt.name"] == a["gateway.prompt.name"] == "support-agent"
    assert a["gen_ai.prompt.version"] == a["llm.prompt_template.version"] == "1.2.0"
    assert a["langfuse.observation.prompt.version"] == 3
    assert (a["gateway.experiment.id"], a["gateway.experiment.assignment"]) == ("exp-1", "user")
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["server.port"] == 443 and a["gateway.environment"] == "production"


def test_content_only_with_capture() -> None:
    """Messages, output and variable values appear only when capture is on; the template always."""
    off = span_attributes(RECORD, capture_content=False)
    on = span_attributes(RECORD, capture_content=True)
    assert "llm.prompt_template.template" in off
    for key in ("gen_ai.input.messages", "gen_ai.output.messages", "llm.prompt_template.variables"):
        assert key not in off and key in on
    assert "secret question" not in str(off)


def test_user_id_is_a_hash() -> None:
    """user.id never holds the raw user key."""
    assert span_attributes(RECORD, capture_content=True)["user.id"] != "alice"


def test_feature_flag_event_only_during_experiments() -> None:
    """The event exists for experiment calls, with key, variant and reason."""
    assert feature_flag_event(RECORD) == {
        "feature_flag.key": "exp-1",
        "feature_flag.result.variant": "treatment",
        "feature_flag.result.reason": "split",
        "feature_flag.provider.name": "prompt-gateway",
    }
    plain = replace(RECORD, prompt=replace(PROMPT, experiment_id=None))
    assert feature_flag_event(plain) is None


def test_backend_attributes_of_an_llm_span() -> None:
    """An LLM span has OpenInference's kind, model, parameters, tokens and cost, Langfuse's cost
    and metadata, and the session."""
    a = span_attributes(RECORD, capture_content=False)
    conventions.check_types(a, conventions.OPENINFERENCE_LLM)
    conventions.check_types(a, conventions.LANGFUSE | conventions.LANGFUSE_PROMPT_METADATA)
    assert a["openinference.span.kind"] == "LLM"
    assert a["llm.model_name"] == "gpt-4o-mini-2024-07-18"
    assert (a["llm.token_count.prompt"], a["llm.token_count.completion"]) == (10, 5)
    assert a["llm.token_count.total"] == 15
    assert a["gen_ai.usage.cost"] == a["llm.cost.total"] == a["gateway.cost.usd"] == 0.00001
    assert (a["llm.cost.prompt"], a["llm.cost.completion"]) == (0.000004, 0.000006)
    assert orjson.loads(a["metadata"]) == {
        "environment": "production",
        "prompt_name": "support-agent",
        "prompt_version": "1.2.0",
        "prompt_number": 3,
        "variant": "treatment",
        "resolution": "experiment",
        "experiment_id": "exp-1",
        "request_id": "req_1",
    }
    assert a["langfuse.observation.metadata.experiment_id"] == "exp-1"
    assert a["langfuse.observation.metadata.request_id"] == "req_1"
    assert a["session.id"] == "conversation-7"
    assert conventions.content_attributes(a) == []


def test_proxy_span_kind_marks_a_hop() -> None:
    """span_kind proxy: a CHAIN span without llm.* model, tokens or cost, usage as gateway.*."""
    a = span_attributes(
        replace(RECORD, time_to_first_chunk_s=0.1), capture_content=False, span_kind="proxy"
    )
    assert a["openinference.span.kind"] == "CHAIN"
    assert not [k for k in a if k.startswith("llm.") and "prompt_template" not in k]
    for gone in (
        "gen_ai.usage.cost",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "langfuse.observation.completion_start_time",
    ):
        assert gone not in a
    assert (a["gateway.usage.input_tokens"], a["gateway.usage.output_tokens"]) == (10, 5)
    assert a["gateway.cost.usd"] == 0.00001 and "metadata" in a


@pytest.mark.parametrize(
    ("operation", "kind"), [("chat", "LLM"), ("embeddings", "EMBEDDING"), (None, "CHAIN")]
)
def test_openinference_span_kind(operation: str | None, kind: str) -> None:
    """Chat and Responses are LLM, embeddings EMBEDDING, other paths CHAIN."""
    a = span_attributes(replace(RECORD, operation=operation), capture_content=False)
    assert a["openinference.span.kind"] == kind


def test_captured_chat_content_follows_both_conventions() -> None:
    """With capture: GenAI messages valid against the schemas, the system prompt apart, and
    OpenInference's flattened messages and input/output values."""
    a = span_attributes(RECORD, capture_content=True)
    assert conventions.validate_messages(a) == list(conventions.MESSAGE_SCHEMAS)
    assert orjson.loads(a["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "You are the support agent of Acme."}
    ]
    assert orjson.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "secret question"}]}
    ]
    assert orjson.loads(a["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "answer"}],
            "finish_reason": "stop",
        }
    ]
    assert conventions.openinference_messages(a, "input") == [
        {"role": "system", "content": "You are the support agent of Acme."},
        {"role": "user", "content": "secret question"},
    ]
    assert conventions.openinference_messages(a, "output") == [
        {"role": "assistant", "content": "answer"}
    ]
    conventions.check_types(a, conventions.OPENINFERENCE_CONTENT)
    assert (a["input.mime_type"], a["output.mime_type"]) == ("application/json", "text/plain")
    assert orjson.loads(a["input.value"])[1] == {"role": "user", "content": "secret question"}
    assert a["output.value"] == "answer"


RICH_CHAT = {
    "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-1"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"a"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
    ]
}
RICH_RESPONSES = {
    "instructions": "Answer in French.",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Bonjour"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Salut"}],
        },
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"role": "user", "content": [{"type": "input_image", "image_url": "https://e.x/i.png"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ],
}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/chat/completions", RICH_CHAT),
        ("/responses", RICH_RESPONSES),
        ("/responses", {"input": "Just text"}),
        ("/chat/completions", {"messages": []}),
    ],
    ids=["chat-parts-and-tools", "responses-items", "responses-string", "no-messages"],
)
@pytest.mark.parametrize("reason", ["stop", "length", "tool_calls", "content_filter", None])
def test_captured_messages_always_match_the_schemas(
    route: str, body: dict[str, object], reason: str | None
) -> None:
    """Images, audio, files, tool calls and results, Responses items: every shape validates."""
    record = replace(
        RECORD,
        route=route,
        request_body=body,
        finish_reasons=(reason,) if reason else (),
        output_text="" if reason == "tool_calls" else "answer",
    )
    a = span_attributes(record, capture_content=True)
    assert "gen_ai.input.messages" in conventions.validate_messages(a)
    [output] = orjson.loads(a["gen_ai.output.messages"])
    expected = {"tool_calls": "tool_call", None: "stop"}.get(reason, reason)
    assert output["finish_reason"] == expected
    conventions.openinference_messages(a, "input")


def test_responses_instructions_and_tool_items() -> None:
    """instructions become system instructions; function calls and outputs become tool parts."""
    a = span_attributes(replace(RECORD, request_body=RICH_RESPONSES), capture_content=True)
    assert orjson.loads(a["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Answer in French."}
    ]
    roles = [m["role"] for m in orjson.loads(a["gen_ai.input.messages"])]
    assert roles == ["user", "assistant", "assistant", "tool", "user", "user"]
    flat = conventions.openinference_messages(a, "input")
    assert flat[0] == {"role": "system", "content": "Answer in French."}
    assert flat[1] == {"role": "user", "content": "Bonjour"}


def test_embeddings_content() -> None:
    """Embeddings: OpenInference's embedding texts and input.value, no chat messages."""
    record = replace(
        RECORD, operation="embeddings", request_body={"input": ["a", "b"]}, output_text=None
    )
    a = span_attributes(record, capture_content=True)
    assert a["openinference.span.kind"] == "EMBEDDING"
    assert a["embedding.embeddings.1.embedding.text"] == "b"
    assert orjson.loads(a["input.value"]) == ["a", "b"]
    assert "gen_ai.input.messages" not in a and "llm.input_messages.0.message.role" not in a


def test_invocation_parameters_hold_no_content() -> None:
    """Model parameters only: never messages, input or instructions."""
    found = invocation_parameters(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 1, "seed": 3}
    )
    assert found is not None and orjson.loads(found) == {"model": "m", "top_p": 1, "seed": 3}
    assert invocation_parameters({"messages": []}) is None


def test_iso_time() -> None:
    """Nanoseconds since the epoch as ISO 8601 UTC, to the microsecond."""
    assert iso_time(1_752_384_000_500_000_999) == "2025-07-13T05:20:00.500000Z"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("conv-1", "conv-1"),
        ("café-sess".encode().decode("latin-1"), "café-sess"),
        ("caf\xe9", "café"),
        ("  padded  ", "padded"),
        ("   ", None),
        ("x" * 300, "x" * 256),
    ],
)
def test_session_id_from_the_header(header: str | None, expected: str | None) -> None:
    """The header as the server reads it (latin-1) -> session.id: UTF-8, stripped, bounded."""
    from gateway.service import session_id

    assert session_id(header) == expected


def test_adopted_calls_are_flagged_in_the_metadata() -> None:
    """An adopted call carries `adopted: true` in both backends' metadata; others carry none."""
    plain = span_attributes(RECORD, capture_content=False)
    assert "adopted" not in orjson.loads(plain["metadata"])
    assert "langfuse.observation.metadata.adopted" not in plain
    record = replace(RECORD, prompt=replace(PROMPT, adopted=True))
    a = span_attributes(record, capture_content=False)
    assert orjson.loads(a["metadata"])["adopted"] is True
    assert a["langfuse.observation.metadata.adopted"] is True
    assert a["gateway.prompt.adopted"] is True


def test_output_tool_calls() -> None:
    """The answer's function calls: tool_call parts (arguments parsed), OpenInference's
    tool_calls attributes, output.value the assistant message as JSON."""
    record = replace(
        RECORD,
        finish_reasons=("tool_calls",),
        output_text="",
        output_tool_calls=(("call_1", "get_weather", '{"city":"Paris"}'), (None, "cut", '{"a')),
    )
    a = span_attributes(record, capture_content=True)
    assert "gen_ai.output.messages" in conventions.validate_messages(a)
    assert orjson.loads(a["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                },
                {"type": "tool_call", "id": None, "name": "cut", "arguments": '{"a'},
            ],
            "finish_reason": "tool_call",
        }
    ]
    head = "llm.output_messages.0.message.tool_calls"
    assert a[f"{head}.0.tool_call.id"] == "call_1"
    assert a[f"{head}.0.tool_call.function.name"] == "get_weather"
    assert a[f"{head}.0.tool_call.function.arguments"] == '{"city":"Paris"}'
    assert f"{head}.1.tool_call.id" not in a
    assert a[f"{head}.1.tool_call.function.name"] == "cut"
    assert a["output.mime_type"] == "application/json"
    assert orjson.loads(a["output.value"])["tool_calls"][0] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    assert not [k for k in span_attributes(record, capture_content=False) if "tool_call" in k]
