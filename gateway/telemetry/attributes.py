"""CallRecord -> span name, attributes and events: pure, so tests pin every name (PRODUCT §8)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from gateway.telemetry.events import CallRecord

Attributes = dict[str, Any]


def span_name(operation: str | None, model: str | None, method: str, route: str) -> str:
    """`chat gpt-4o-mini` (GenAI convention), or `GET /v1/models` for other paths."""
    if operation is None:
        return f"{method} /v1{route}"
    return f"{operation} {model}" if model else operation


def provider_system(name: str, address: str) -> str:
    """The well-known gen_ai.provider.name for the host, else the configured provider name."""
    if address == "api.openai.com":
        return "openai"
    if address.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    return name


def hash_user(user_key: str) -> str:
    """user.id: a hash of the user key, never the key itself."""
    return hashlib.sha256(user_key.encode()).hexdigest()[:32]


def span_attributes(record: CallRecord, *, capture_content: bool) -> Attributes:
    """Every span attribute of the call; content and variable values only when captured."""
    return {**steady_attributes(record), **call_attributes(record, capture_content=capture_content)}


def steady_key(record: CallRecord) -> tuple[object, ...]:
    """Everything steady_attributes reads: calls with equal keys have equal steady attributes."""
    prompt = record.prompt
    return (
        record.provider_system,
        record.server_address,
        record.server_port,
        record.environment,
        record.provider,
        record.status,
        record.operation,
        record.request_model,
        record.temperature,
        record.max_tokens,
        record.response_model,
        record.error_type,
        record.finish_reasons,
        record.usage_estimated,
        record.stream,
        record.client_disconnected,
        None
        if prompt is None
        else (
            prompt.name,
            prompt.version,
            prompt.number,
            prompt.variant,
            prompt.resolution,
            prompt.template,
            prompt.experiment_id,
            prompt.assignment,
            prompt.replaced_system,
            prompt.adopted,
        ),
    )


def steady_attributes(record: CallRecord) -> Attributes:
    """The attributes that repeat from call to call: provider, models, parameters, prompt."""
    attrs: Attributes = {
        "gen_ai.provider.name": record.provider_system,
        "server.address": record.server_address,
        "gateway.environment": record.environment,
        "gateway.provider": record.provider,
        "http.response.status_code": record.status,
    }
    if record.operation is not None:
        attrs["gen_ai.operation.name"] = record.operation
    if record.server_port is not None:
        attrs["server.port"] = record.server_port
    optional = {
        "gen_ai.request.model": record.request_model,
        "gen_ai.request.temperature": record.temperature,
        "gen_ai.request.max_tokens": record.max_tokens,
        "gen_ai.response.model": record.response_model,
        "error.type": record.error_type,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if record.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = list(record.finish_reasons)
    if record.usage_estimated:
        attrs["gateway.usage.estimated"] = True
    if record.stream:
        attrs["gateway.stream"] = True
    if record.client_disconnected:
        attrs["gateway.client_disconnected"] = True
    prompt = record.prompt
    if prompt is not None:
        attrs.update(
            {
                "gen_ai.prompt.name": prompt.name,
                "gen_ai.prompt.version": prompt.version,
                "gateway.prompt.name": prompt.name,
                "gateway.prompt.version": prompt.version,
                "gateway.prompt.variant": prompt.variant,
                "gateway.prompt.resolution": prompt.resolution,
                "gateway.prompt.replaced_system": prompt.replaced_system,
                "langfuse.observation.prompt.name": prompt.name,
                "langfuse.observation.prompt.version": prompt.number,
                "llm.prompt_template.template": prompt.template,
                "llm.prompt_template.version": prompt.version,
            }
        )
        if prompt.experiment_id is not None:
            attrs["gateway.experiment.id"] = prompt.experiment_id
        if prompt.assignment is not None:
            attrs["gateway.experiment.assignment"] = prompt.assignment
        if prompt.adopted:
            attrs["gateway.prompt.adopted"] = True
    return attrs


CALL_FIELDS: tuple[tuple[str, str], ...] = (
    ("gateway.request_id", "request_id"),
    ("gateway.overhead_ms", "overhead_ms"),
    ("gen_ai.response.id", "response_id"),
    ("gen_ai.usage.input_tokens", "input_tokens"),
    ("gen_ai.usage.output_tokens", "output_tokens"),
    ("gen_ai.response.time_to_first_chunk", "time_to_first_chunk_s"),
    ("gateway.cost.usd", "cost_usd"),
    ("user.id", "user_hash"),
)
"""The attributes of each call alone: (name, CallRecord field); a None field is left out."""


def call_attributes(record: CallRecord, *, capture_content: bool) -> Attributes:
    """The attributes of this call alone: ids, tokens, cost, timings, the user, content."""
    attrs: Attributes = {
        name: value for name, field in CALL_FIELDS if (value := getattr(record, field)) is not None
    }
    if capture_content:
        attrs.update(content_attributes(record))
    return attrs


def content_attributes(record: CallRecord) -> Attributes:
    """Variable values, request messages and the answer (only with content capture on)."""
    attrs: Attributes = {}
    prompt = record.prompt
    if prompt is not None:
        attrs["llm.prompt_template.variables"] = orjson.dumps(prompt.variables).decode()
    if record.input_messages is not None:
        attrs["gen_ai.input.messages"] = orjson.dumps(record.input_messages).decode()
    if record.output_text is not None:
        attrs["gen_ai.output.messages"] = orjson.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": record.output_text}]}]
        ).decode()
    return attrs


def feature_flag_event(record: CallRecord) -> Attributes | None:
    """The `feature_flag.evaluation` event's attributes during an experiment, else None."""
    prompt = record.prompt
    if prompt is None or prompt.experiment_id is None:
        return None
    return {
        "feature_flag.key": prompt.experiment_id,
        "feature_flag.result.variant": prompt.variant,
        "feature_flag.result.reason": "split",
        "feature_flag.provider.name": "prompt-gateway",
    }
