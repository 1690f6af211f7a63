"""What tracing backends expect of a span: the OTel GenAI message schemas (vendored in schemas/),
and the OpenInference and Langfuse attribute names the gateway sends, checked by name and type.

Sources: OpenInference semantic conventions (arize-ai.github.io/openinference/spec/attributes/
semantic-conventions.html, "Messages"); Langfuse's OpenTelemetry property mapping
(langfuse.com/integrations/native/opentelemetry; packages/shared/src/server/otel/
OtelIngestionProcessor.ts in langfuse/langfuse).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import orjson

SCHEMAS = Path(__file__).parent / "schemas"
MESSAGE_SCHEMAS = {
    "gen_ai.input.messages": "gen-ai-input-messages.json",
    "gen_ai.output.messages": "gen-ai-output-messages.json",
    "gen_ai.system_instructions": "gen-ai-system-instructions.json",
}
SPAN_KINDS = {"LLM", "EMBEDDING", "CHAIN"}

# OpenInference: name -> type of value (JSON strings are str, checked to parse as objects).
OPENINFERENCE_LLM = {
    "openinference.span.kind": str,
    "llm.model_name": str,
    "llm.invocation_parameters": str,
    "llm.token_count.prompt": int,
    "llm.token_count.completion": int,
    "llm.token_count.total": int,
    "llm.cost.total": float,
    "llm.cost.prompt": float,
    "llm.cost.completion": float,
    "metadata": str,
}
OPENINFERENCE_EMBEDDING = {
    "openinference.span.kind": str,
    "embedding.model_name": str,
    "embedding.invocation_parameters": str,
    "llm.token_count.prompt": int,
    "llm.token_count.total": int,
    "metadata": str,
}
OPENINFERENCE_CONTENT = {
    "input.value": str,
    "input.mime_type": str,
    "output.value": str,
    "output.mime_type": str,
}
LANGFUSE = {
    "gen_ai.usage.cost": float,
    "langfuse.observation.metadata.environment": str,
    "langfuse.observation.metadata.request_id": str,
}
LANGFUSE_PROMPT_METADATA = {
    "langfuse.observation.metadata.prompt_name": str,
    "langfuse.observation.metadata.prompt_version": str,
    "langfuse.observation.metadata.variant": str,
    "langfuse.observation.metadata.resolution": str,
}
MESSAGE_ATTRIBUTE = re.compile(r"llm\.(input|output)_messages\.(\d+)\.message\.(role|content)$")
CONTENT_PREFIXES = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "llm.input_messages.",
    "llm.output_messages.",
    "input.value",
    "output.value",
    "embedding.embeddings.",
    "llm.prompt_template.variables",
)


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = orjson.loads((SCHEMAS / name).read_bytes())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


def validate_messages(attributes: Mapping[str, Any]) -> list[str]:
    """Check every GenAI message attribute present against its schema; return the names seen."""
    seen = []
    for name, schema in MESSAGE_SCHEMAS.items():
        if name in attributes:
            value = attributes[name]
            assert isinstance(value, str), f"{name} must be a JSON string"
            _validator(schema).validate(orjson.loads(value))
            seen.append(name)
    return seen


def check_types(attributes: Mapping[str, Any], expected: Mapping[str, type]) -> None:
    """Each expected name is present with a value of its type (JSON strings parse as objects)."""
    for name, kind in expected.items():
        assert name in attributes, f"missing {name}"
        value = attributes[name]
        assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (
            f"{name} = {value!r} is not {kind.__name__}"
        )
    for name in ("metadata", "llm.invocation_parameters", "embedding.invocation_parameters"):
        if name in expected:
            assert isinstance(orjson.loads(attributes[name]), dict), f"{name} is not a JSON object"


def openinference_messages(attributes: Mapping[str, Any], direction: str) -> list[dict[str, str]]:
    """`llm.{direction}_messages.{i}.message.role|content` gathered into a list, indices dense."""
    found: dict[int, dict[str, str]] = {}
    for name, value in attributes.items():
        match = MESSAGE_ATTRIBUTE.match(name)
        if match and match.group(1) == direction:
            found.setdefault(int(match.group(2)), {})[match.group(3)] = value
    assert sorted(found) == list(range(len(found))), "message indices must be 0, 1, 2, ..."
    return [found[i] for i in range(len(found))]


def check_completion_start(attributes: Mapping[str, Any], start_ns: int) -> None:
    """langfuse.observation.completion_start_time is ISO 8601 UTC, span start + time to first
    chunk (to the microsecond)."""
    value = attributes["langfuse.observation.completion_start_time"]
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    first = attributes["gen_ai.response.time_to_first_chunk"]
    expected = start_ns / 1e9 + first
    assert abs(moment.timestamp() - expected) < 2e-6, (value, expected)


def content_attributes(attributes: Mapping[str, Any]) -> list[str]:
    """The names of attributes that hold message content."""
    return [name for name in attributes if name.startswith(CONTENT_PREFIXES)]
