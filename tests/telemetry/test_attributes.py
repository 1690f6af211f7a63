"""CallRecord -> span attributes: names and redaction pinned without any exporter."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.telemetry.attributes import (
    feature_flag_event,
    hash_user,
    provider_system,
    span_attributes,
    span_name,
)
from gateway.telemetry.events import CallRecord, PromptInfo

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
    input_messages=[{"role": "user", "content": "secret question"}],
    output_text="answer",
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
