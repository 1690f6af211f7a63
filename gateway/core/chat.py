"""Chat requests: finding a managed-prompt reference, the user key, and injecting a rendered prompt.

Bodies arrive here already parsed (a dict) and leave as a new dict; nothing here serializes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.core.model import PromptVersion
from gateway.core.rendering import Message
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
    if isinstance(prompt, Mapping):
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
    if isinstance(metadata, Mapping):
        value = metadata.get("user_id")
        if isinstance(value, str) and value:
            return value
    return None


def inject_chat(
    body: Mapping[str, Any], rendered: tuple[Message, ...], version: PromptVersion
) -> dict[str, Any]:
    """A chat completions body with the rendered prompt in front and the version's parameters.

    The request's own system/developer messages are replaced; its other messages follow the
    rendered ones. The version's model, temperature and max_tokens replace the request's.
    """
    out = {k: v for k, v in body.items() if k not in PROMPT_FIELDS}
    own = out.get("messages") or []
    if not isinstance(own, list):
        raise InvalidRequest("messages must be a list.", param="messages")
    kept = [m for m in own if not (isinstance(m, Mapping) and m.get("role") in _SYSTEM_ROLES)]
    out["messages"] = [{"role": m.role, "content": m.content} for m in rendered] + kept
    _apply_parameters(out, version, max_tokens_field=_chat_max_tokens_field(out))
    return out


def inject_responses(
    body: Mapping[str, Any], rendered: tuple[Message, ...], version: PromptVersion
) -> dict[str, Any]:
    """A Responses API body with the rendered prompt as the first input items.

    `instructions` and system/developer input items are replaced by the rendered messages; a
    string `input` becomes one user item after them.
    """
    out = {k: v for k, v in body.items() if k not in PROMPT_FIELDS and k != "instructions"}
    own = out.get("input")
    if own is None:
        items: list[Any] = []
    elif isinstance(own, str):
        items = [{"role": "user", "content": own}]
    elif isinstance(own, list):
        items = [i for i in own if not (isinstance(i, Mapping) and i.get("role") in _SYSTEM_ROLES)]
    else:
        raise InvalidRequest("input must be a string or a list of items.", param="input")
    out["input"] = [{"role": m.role, "content": m.content} for m in rendered] + items
    _apply_parameters(out, version, max_tokens_field="max_output_tokens")
    return out


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client itself asked for the usage chunk of a stream."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


_SYSTEM_ROLES = frozenset({"system", "developer"})


def _chat_max_tokens_field(body: Mapping[str, Any]) -> str:
    # Newer models take max_completion_tokens; keep whichever spelling the client used.
    return "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"


def _apply_parameters(
    out: dict[str, Any], version: PromptVersion, *, max_tokens_field: str
) -> None:
    if version.model is not None:
        out["model"] = version.model
    elif isinstance(out.get("model"), str) and out["model"].startswith(MODEL_ALIAS):
        raise InvalidRequest(
            f"Prompt {version.label} names no model, so the model alias cannot be served; "
            "set model: in its prompt file or send a real model.",
            param="model",
        )
    if version.temperature is not None:
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
    if not isinstance(value, Mapping):
        raise InvalidPromptVariables(f"{param} must be a JSON object.", param=param)
    return value
