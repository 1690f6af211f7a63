"""Chat requests: finding a managed-prompt reference, the user key, and injecting a rendered prompt.

Bodies arrive here already parsed (a dict) and leave as a new dict; nothing here serializes.
JSON objects inside them are dicts (orjson's), checked with `isinstance(x, dict)`: the Mapping
ABC costs several times more, on every request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.core.model import PromptVersion
from gateway.core.rendering import SYSTEM_ROLES, Content, RenderedMessage
from gateway.errors import InvalidPromptVariables, InvalidRequest

PROMPT_FIELDS = ("prompt", "prompt_id", "prompt_version", "prompt_variables")
MODEL_ALIAS = "prompt:"
Source = Literal["body", "litellm", "header", "model"]


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A request's reference to a managed prompt."""

    name: str
    version: str | None
    variables: Mapping[str, object]
    source: Source


@dataclass(frozen=True, slots=True)
class PromptHeaders:
    """The X-Prompt-* request headers, with X-Prompt-Variables already parsed from JSON."""

    name: str | None = None
    version: str | None = None
    variables: Mapping[str, object] | None = None


def find_prompt_ref(body: Mapping[str, Any], headers: PromptHeaders) -> PromptRef | None:
    """The first reference present: body `prompt`, LiteLLM fields, X-Prompt-* headers, alias."""
    prompt = body.get("prompt")
    if isinstance(prompt, dict):
        return PromptRef(
            _prompt_name(prompt.get("id", prompt.get("name")), "prompt.id"),
            _optional_str(prompt.get("version"), "prompt.version"),
            _variables(prompt.get("variables"), "prompt.variables"),
            "body",
        )
    if prompt is not None and not isinstance(prompt, str):
        raise InvalidRequest(
            "prompt must be an object with id, version and variables.", param="prompt"
        )
    if "prompt_id" in body:
        return PromptRef(
            _prompt_name(body["prompt_id"], "prompt_id"),
            _optional_str(body.get("prompt_version"), "prompt_version"),
            _variables(body.get("prompt_variables"), "prompt_variables"),
            "litellm",
        )
    if headers.name:
        return PromptRef(headers.name, headers.version or None, headers.variables or {}, "header")
    model = body.get("model")
    if isinstance(model, str) and model.startswith(MODEL_ALIAS):
        name, _, version = model[len(MODEL_ALIAS) :].partition("@")
        if not name:
            raise InvalidRequest(f"Model alias {model!r} names no prompt.", param="model")
        variables = _variables(body.get("prompt_variables"), "prompt_variables")
        return PromptRef(name, version or None, variables or headers.variables or {}, "model")
    return None


def find_user_key(body: Mapping[str, Any], header: str | None) -> str | None:
    """X-User-Id, else body `safety_identifier`, `user`, then `metadata.user_id`."""
    if header:
        return header
    for field in ("safety_identifier", "user"):
        value = body.get(field)
        if isinstance(value, str) and value:
            return value
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        value = metadata.get("user_id")
        if isinstance(value, str) and value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Injected:
    """A request body with a managed prompt injected."""

    body: dict[str, Any]
    replaced_system: int
    """How many of the request's own system/developer messages (on /v1/responses: its
    `instructions` and system/developer input items) the prompt replaced; 0 with `keep`."""


def inject_chat(
    body: Mapping[str, Any],
    rendered: Sequence[RenderedMessage],
    version: PromptVersion,
    *,
    reasoning: bool = False,
    keep: bool | None = None,
) -> Injected:
    """A chat completions body with the rendered prompt in front and the version's parameters.

    The request's messages follow the rendered ones, in their own order. Its system/developer
    messages are dropped (and counted) unless the version says `client_system: keep`. The
    version's model, temperature and max_tokens replace the request's, spelled for the model
    (`reasoning`: see `_apply_parameters`). `keep` overrides the version's `client_system`.
    """
    out = {k: v for k, v in body.items() if k not in PROMPT_FIELDS}
    own = out.get("messages") or []
    if not isinstance(own, list):
        raise InvalidRequest("messages must be a list.", param="messages")
    if keep is None:
        keep = version.client_system == "keep"
    kept = own if keep else [m for m in own if not _is_system(m)]
    out["messages"] = [_message(m) for m in rendered] + kept
    _apply_parameters(out, version, _chat_max_tokens_field(body, reasoning), reasoning)
    return Injected(out, len(own) - len(kept))


def inject_responses(
    body: Mapping[str, Any],
    rendered: Sequence[RenderedMessage],
    version: PromptVersion,
    *,
    reasoning: bool = False,
    keep: bool | None = None,
) -> Injected:
    """A Responses API body with the rendered prompt as `instructions` and leading input items.

    `rendered` comes from `render_request(..., "responses")`, so its system/developer messages
    are text: they become `instructions`, joined by blank lines (OpenAI does not carry
    `instructions` over with `previous_response_id`, so they are sent every turn). The other
    rendered messages are put before `input` only when the request continues nothing (no
    `previous_response_id`, no `conversation`): a chained conversation sees them once, and one
    kept by OpenAI (`conversation`) never gets them, since the gateway cannot tell its first
    turn; put such messages into the conversation when creating it. The request's own
    `instructions` and system/developer input items are dropped (and counted), or with
    `client_system: keep` its instructions follow the rendered ones and its items stay. An
    `input` left alone keeps its shape; a string input becomes a user item only when items go
    before it. `keep` overrides the version's `client_system`.
    """
    out = {k: v for k, v in body.items() if k not in PROMPT_FIELDS}
    if keep is None:
        keep = version.client_system == "keep"
    own = out.get("input")
    if own is not None and not isinstance(own, str | list):
        raise InvalidRequest("input must be a string or a list of items.", param="input")
    replaced = 0
    if isinstance(own, list) and not keep:
        items = [i for i in own if not _is_system(i)]
        replaced = len(own) - len(items)
        out["input"] = own = items
    instructions = [_text(m.content) for m in rendered if m.role in SYSTEM_ROLES]
    theirs = out.pop("instructions", None)
    if keep and theirs:
        if not isinstance(theirs, str):
            raise InvalidRequest("instructions must be a string.", param="instructions")
        instructions.append(theirs)
    elif theirs:
        replaced += 1
    if instructions:
        out["instructions"] = "\n\n".join(instructions)
    if not (out.get("previous_response_id") or out.get("conversation")):
        lead = [_message(m) for m in rendered if m.role not in SYSTEM_ROLES]
        if lead:
            tail = [{"role": "user", "content": own}] if isinstance(own, str) else own or []
            out["input"] = lead + tail
    _apply_parameters(out, version, "max_output_tokens", reasoning)
    return Injected(out, replaced)


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client itself asked for the usage chunk of a stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _is_system(message: object) -> bool:
    return isinstance(message, dict) and message.get("role") in SYSTEM_ROLES


def _message(message: RenderedMessage) -> dict[str, Any]:
    content = message.content
    return {"role": message.role, "content": content if isinstance(content, str) else [*content]}


def _text(content: Content) -> str:
    # render_request gives system/developer messages on /v1/responses as text already.
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content)


def _chat_max_tokens_field(body: Mapping[str, Any], reasoning: bool) -> str:
    # A client that already used one spelling keeps it; otherwise the model decides.
    if "max_completion_tokens" in body:
        return "max_completion_tokens"
    if "max_tokens" in body:
        return "max_tokens"
    return "max_completion_tokens" if reasoning else "max_tokens"


def _apply_parameters(
    out: dict[str, Any], version: PromptVersion, max_tokens_field: str, reasoning: bool
) -> None:
    """The version's model, temperature and max_tokens over the request's.

    For a reasoning model (core.quirks) the version's temperature is left out: those models
    refuse any but the default. Only the version's parameters are changed; a temperature the
    client sent itself is its own to send.
    """
    if version.model is not None:
        out["model"] = version.model
    elif isinstance(out.get("model"), str) and out["model"].startswith(MODEL_ALIAS):
        raise InvalidRequest(
            f"Prompt {version.label} names no model, so the model alias cannot be served; "
            "set model: in its prompt file or send a real model.",
            param="model",
        )
    if version.temperature is not None and not reasoning:
        out["temperature"] = version.temperature
    if version.max_tokens is not None:
        out[max_tokens_field] = version.max_tokens


def _prompt_name(value: object, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param} must be a non-empty string.", param=param)
    return value


def _optional_str(value: object, param: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{param} must be a string like '1.2.0'.", param=param)
    return value


def _variables(value: object, param: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidPromptVariables(f"{param} must be a JSON object.", param=param)
    return value
