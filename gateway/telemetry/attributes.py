"""CallRecord -> span name, attributes and events: pure, so tests pin every name (PRODUCT §8).

Besides OpenTelemetry's GenAI conventions, a span carries what two LLM backends read:

- OpenInference (Arize Phoenix; arize-ai.github.io/openinference/spec/attributes/
  semantic-conventions.html): `openinference.span.kind` (required: `LLM`, `EMBEDDING`, `CHAIN`),
  `llm.model_name`, `llm.invocation_parameters` (JSON), `llm.token_count.prompt|completion|total`,
  `llm.cost.prompt|completion|total` (USD), `embedding.model_name`,
  `embedding.invocation_parameters`, `metadata` (a JSON object), `session.id`, and with content
  capture `input.value`/`output.value` (+ `input.mime_type`/`output.mime_type`) and
  `llm.input_messages.{i}.message.role|content`, `llm.output_messages.{i}.message.role|content`
  and the answer's function calls as
  `llm.output_messages.0.message.tool_calls.{j}.tool_call.id|function.name|function.arguments`
  (arize-ai.github.io/openinference/spec/tool_calling.html).
- Langfuse (langfuse.com/integrations/native/opentelemetry, "property mapping"; its ingestion
  reads these in packages/shared/src/server/otel/OtelIngestionProcessor.ts): `gen_ai.usage.cost`
  (total USD), `langfuse.observation.completion_start_time` (ISO 8601), and filterable metadata
  as `langfuse.observation.metadata.<key>` attributes (one per key).

`span_kind` is the `telemetry.span_kind` setting: `llm` (the default) marks the span as the LLM
call; `proxy` marks it as a hop (OpenInference `CHAIN`, which Langfuse maps to a chain
observation) for teams whose applications trace the LLM call themselves. A proxy span has no
`llm.*` model, parameter, token or cost attributes, no `gen_ai.usage.cost` and no completion
start time, and its token counts move to `gateway.usage.input_tokens|output_tokens`: backends
that sum tokens and cost over a trace (and derive them from `gen_ai.usage.*`) would otherwise
count the call twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from gateway.core.digests import sha256
from gateway.telemetry import messages
from gateway.telemetry.events import CallRecord

Attributes = dict[str, Any]
SpanKind = Literal["llm", "proxy"]
"""telemetry.span_kind (settings.SpanKind; telemetry does not import the settings)."""
JSON = "application/json"
TEXT = "text/plain"


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


INVOCATION_PARAMETERS = (
    "model",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "reasoning_effort",
    "reasoning",
    "stream",
    "dimensions",
    "encoding_format",
)
"""The request fields that are model parameters, not content."""


def invocation_parameters(request: Mapping[str, Any]) -> str | None:
    """OpenInference's `llm.invocation_parameters`: the request's model parameters as a JSON
    object, e.g. `{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":512}`; None without."""
    found = {key: request[key] for key in INVOCATION_PARAMETERS if key in request}
    return orjson.dumps(found).decode() if found else None


def hash_user(user_key: str) -> str:
    """user.id: a hash of the user key, never the key itself."""
    return sha256(user_key.encode()).hexdigest()[:32]


def span_attributes(
    record: CallRecord, *, capture_content: bool, span_kind: SpanKind = "llm"
) -> Attributes:
    """Every span attribute of the call; content and variable values only when captured."""
    return {
        **steady_attributes(record, span_kind),
        **call_attributes(record, capture_content=capture_content, span_kind=span_kind),
    }


def openinference_kind(operation: str | None, span_kind: SpanKind) -> str:
    """`openinference.span.kind`: LLM for chat, Responses and completions, EMBEDDING for
    embeddings, CHAIN for other paths and for every span with span_kind `proxy`."""
    if span_kind == "proxy" or operation is None:
        return "CHAIN"
    return "EMBEDDING" if operation == "embeddings" else "LLM"


_SECOND: list[tuple[int, str]] = [(-1, "")]
"""The last whole second formatted: the spans that end in the same second share it."""


def iso_time(unix_ns: int) -> str:
    """A Unix time in ns as ISO 8601 UTC with microseconds: `2025-07-13T05:20:00.500000Z`.

    Formatting a datetime costs microseconds; each second is formatted once and reused."""
    seconds, ns = divmod(unix_ns, 1_000_000_000)
    last, text = _SECOND[0]
    if seconds != last:
        text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND[0] = (seconds, text)
    return f"{text}.{ns // 1000:06d}Z"


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


def steady_attributes(record: CallRecord, span_kind: SpanKind = "llm") -> Attributes:
    """The attributes that repeat from call to call: provider, models, parameters, prompt."""
    kind = openinference_kind(record.operation, span_kind)
    attrs: Attributes = {
        "openinference.span.kind": kind,
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
    model = record.response_model or record.request_model
    if kind == "LLM" and model is not None:
        attrs["llm.model_name"] = model
    elif kind == "EMBEDDING" and model is not None:
        attrs["embedding.model_name"] = model
    attrs.update(
        {f"langfuse.observation.metadata.{k}": v for k, v in steady_metadata(record).items()}
    )
    return attrs


def steady_metadata(record: CallRecord) -> dict[str, str | int | bool]:
    """The filterable metadata that repeats between calls: the environment, and the prompt's
    name, version, number, variant and resolution, the experiment, and `adopted: true` for a
    call served as an adopted prompt, when managed."""
    found: dict[str, str | int | bool] = {"environment": record.environment}
    prompt = record.prompt
    if prompt is not None:
        found.update(
            prompt_name=prompt.name,
            prompt_version=prompt.version,
            prompt_number=prompt.number,
            variant=prompt.variant,
            resolution=prompt.resolution,
        )
        if prompt.experiment_id is not None:
            found["experiment_id"] = prompt.experiment_id
        if prompt.adopted:
            found["adopted"] = True
    return found


def metadata_head(record: CallRecord) -> bytes:
    """OpenInference's `metadata` JSON up to the request id's value: the steady metadata, then
    `"request_id":`. The request id and `}` complete it (see `metadata_json`)."""
    return orjson.dumps(steady_metadata(record))[:-1] + b',"request_id":'


def metadata_json(record: CallRecord) -> str:
    """OpenInference's `metadata` attribute: a JSON object of the steady metadata and the
    request id, e.g. `{"environment":"production","prompt_name":"support-agent",...,
    "request_id":"req_1"}`."""
    return (metadata_head(record) + orjson.dumps(record.request_id) + b"}").decode()


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
"""The attributes of each call alone: (name, CallRecord field); a None field is left out.
`call_attributes` adds, after each, what the other backends read of the same value."""


def call_attributes(
    record: CallRecord, *, capture_content: bool, span_kind: SpanKind = "llm"
) -> Attributes:
    """The attributes of this call alone: ids, tokens, cost, timings, the user, metadata and
    (with capture) content. Their order is the OTLP fast path's (otlp._add_call_attributes)."""
    llm = span_kind == "llm"
    attrs: Attributes = {"gateway.request_id": record.request_id}
    attrs["gateway.overhead_ms"] = record.overhead_ms
    if record.response_id is not None:
        attrs["gen_ai.response.id"] = record.response_id
    inputs, outputs = record.input_tokens, record.output_tokens
    prefix = "gen_ai" if llm else "gateway"
    if inputs is not None:
        attrs[f"{prefix}.usage.input_tokens"] = inputs
    if outputs is not None:
        attrs[f"{prefix}.usage.output_tokens"] = outputs
    if llm and inputs is not None:
        attrs["llm.token_count.prompt"] = inputs
        if outputs is not None:
            attrs["llm.token_count.completion"] = outputs
        attrs["llm.token_count.total"] = inputs + (outputs or 0)
    first = record.time_to_first_chunk_s
    if first is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = first
        if llm:
            start = record.start_ns + int(first * 1e9)
            attrs["langfuse.observation.completion_start_time"] = iso_time(start)
    if record.cost_usd is not None:
        attrs["gateway.cost.usd"] = record.cost_usd
        if llm:
            attrs["gen_ai.usage.cost"] = record.cost_usd
            attrs["llm.cost.total"] = record.cost_usd
            if record.input_cost_usd is not None:
                attrs["llm.cost.prompt"] = record.input_cost_usd
            if record.output_cost_usd is not None:
                attrs["llm.cost.completion"] = record.output_cost_usd
    if record.user_hash is not None:
        attrs["user.id"] = record.user_hash
    if record.session_id is not None:
        attrs["session.id"] = record.session_id
    attrs["langfuse.observation.metadata.request_id"] = record.request_id
    attrs["metadata"] = metadata_json(record)
    # Per call, not steady: a client that varies a parameter (a random seed) must not make every
    # span a new shape to encode.
    parameters = record.invocation_parameters
    if llm and parameters is not None and record.operation is not None:
        embedding = record.operation == "embeddings"
        kind = "embedding" if embedding else "llm"
        attrs[f"{kind}.invocation_parameters"] = parameters
    if capture_content:
        attrs.update(content_attributes(record))
    return attrs


def content_attributes(record: CallRecord) -> Attributes:
    """Variable values, request messages and the answer (only with content capture on).

    Chat and Responses calls: `gen_ai.system_instructions`, `gen_ai.input.messages`,
    `gen_ai.output.messages` (OpenTelemetry's JSON schemas), `llm.input_messages.*`,
    `llm.output_messages.*`, `input.value` (the messages in OpenAI's chat shape, JSON) and
    `output.value` (the answer's text; with function calls, the assistant message in OpenAI's
    chat shape, JSON). Embeddings: `input.value` and
    `embedding.embeddings.{i}.embedding.text`.
    """
    attrs: Attributes = {}
    prompt = record.prompt
    if prompt is not None:
        attrs["llm.prompt_template.variables"] = orjson.dumps(prompt.variables).decode()
    request = record.request_body
    if record.operation == "embeddings":
        texts = messages.embedding_texts(request) if request is not None else []
        if texts:
            attrs["input.value"] = texts[0] if len(texts) == 1 else messages.dumps(texts)
            attrs["input.mime_type"] = TEXT if len(texts) == 1 else JSON
            for i, text in enumerate(texts):
                attrs[f"embedding.embeddings.{i}.embedding.text"] = text
        return attrs
    found = messages.conversation(request) if request is not None else None
    if found is not None:
        if found.system:
            attrs["gen_ai.system_instructions"] = messages.dumps(found.system)
        attrs["gen_ai.input.messages"] = messages.dumps(found.messages)
        attrs["input.value"] = messages.dumps(
            [{"role": role, "content": text} for role, text in found.flat]
        )
        attrs["input.mime_type"] = JSON
        for i, (role, text) in enumerate(found.flat):
            attrs[f"llm.input_messages.{i}.message.role"] = role
            attrs[f"llm.input_messages.{i}.message.content"] = text
    if record.output_text is not None and record.operation is not None:
        reasons = record.finish_reasons
        if reasons:
            reason = messages.otel_finish_reason(reasons[0])
        else:
            reason = "error" if record.error_type or record.client_disconnected else "stop"
        text, calls = record.output_text, record.output_tool_calls
        output = messages.output_message(text, reason, calls)
        attrs["gen_ai.output.messages"] = messages.dumps(output)
        if calls:
            attrs["output.value"] = messages.openai_output(text, calls)
            attrs["output.mime_type"] = JSON
        else:
            attrs["output.value"] = text
            attrs["output.mime_type"] = TEXT
        attrs["llm.output_messages.0.message.role"] = "assistant"
        attrs["llm.output_messages.0.message.content"] = text
        for j, (call_id, name, arguments) in enumerate(calls):
            head = f"llm.output_messages.0.message.tool_calls.{j}.tool_call"
            if call_id is not None:
                attrs[f"{head}.id"] = call_id
            attrs[f"{head}.function.name"] = name
            attrs[f"{head}.function.arguments"] = arguments
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
