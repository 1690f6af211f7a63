"""Templates: `{{name}}` placeholders, compiled once, rendered in a single pass.

Variable values are text, or (in requests) OpenAI content parts: a part fills a message whose
whole content is its placeholder, and that message's content becomes a list holding the part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import InvalidPromptVariables, MissingPromptVariables

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
SYSTEM_ROLES = frozenset({"system", "developer"})

Api = Literal["chat", "responses"]
Part = Mapping[str, Any]
"""An OpenAI content part, e.g. `{"type": "input_image", "image_url": "https://..."}`."""
Value = str | Part
"""A coerced variable value: text, or a content part of the request's API."""
Content = str | tuple[Part, ...]

PART_TYPES: Mapping[Api, frozenset[str]] = {
    "chat": frozenset({"text", "image_url", "input_audio", "file"}),
    "responses": frozenset({"input_text", "input_image", "input_file"}),
}
"""The content parts each API takes as a variable."""
TEXT_PART: Mapping[Api, str] = {"chat": "text", "responses": "input_text"}
TEXT_TYPES = frozenset(TEXT_PART.values())
ENDPOINTS: Mapping[Api, str] = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message of a template or a text rendering."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One message rendered for a request: text, or a list holding one content part."""

    role: str
    content: Content


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    """A message split at its placeholders: even indexes are text, odd ones variable names."""

    role: str
    parts: tuple[str, ...]
    whole: str | None = None
    """The variable whose placeholder is the message's whole content (whitespace aside), if any:
    only such a message can become a content part."""

    def render(self, values: Mapping[str, str]) -> Message:
        """Fill the placeholders; values are inserted literally, never expanded again."""
        parts = self.parts
        if len(parts) == 1:
            return Message(self.role, parts[0])
        out = list(parts)
        for i in range(1, len(out), 2):
            out[i] = values[out[i]]
        return Message(self.role, "".join(out))

    def fill(self, values: Mapping[str, Value], *, text_only: bool) -> RenderedMessage:
        """Render for a request: a part that is the whole content becomes the content.

        Text parts inside running text give their text; any other part there is refused,
        naming the variable. With `text_only` (a message that must stay text) parts give text.
        """
        if self.whole is not None and not text_only:
            value = values[self.whole]
            if not isinstance(value, str):
                return RenderedMessage(self.role, (value,))
        parts = self.parts
        if len(parts) == 1:
            return RenderedMessage(self.role, parts[0])
        out = list(parts)
        for i in range(1, len(out), 2):
            name = out[i]
            value = values[name]
            out[i] = value if isinstance(value, str) else self._text(name, value, text_only)
        return RenderedMessage(self.role, "".join(out))

    def _text(self, name: str, part: Part, text_only: bool) -> str:
        if part["type"] in TEXT_TYPES:
            text: str = part["text"]
            return text
        if text_only:
            raise InvalidPromptVariables(
                f"Prompt variable {name!r} is a content part of type {part['type']!r}, but it "
                f"fills a {self.role} message, which /v1/responses sends as text in "
                f"`instructions`. Send text, or move {{{{{name}}}}} into a user message.",
                param="variables",
            )
        raise InvalidPromptVariables(
            f"Prompt variable {name!r} is a content part of type {part['type']!r} used inside "
            f"running text; a part can only be the whole content of a message. Send text, or "
            f"give {{{{{name}}}}} a message of its own.",
            param="variables",
        )


@dataclass(frozen=True, slots=True)
class Template:
    """A prompt's compiled messages, with the variables they need in order of first use."""

    messages: tuple[CompiledMessage, ...]
    variables: tuple[str, ...]


def placeholders(messages: Sequence[Message]) -> tuple[str, ...]:
    """The variable names the messages use, each once, in order of first appearance."""
    seen: dict[str, None] = {}
    for message in messages:
        for name in PLACEHOLDER.findall(message.content):
            seen.setdefault(name, None)
    return tuple(seen)


def unclosed_placeholder(content: str) -> str | None:
    """The text from a `{{` that no `}}` follows (an unfinished placeholder, `{{#broken`), or None.

    Braces that are closed but are not placeholders (`{{ not-a-var }}`) render as they are; an
    opening with nothing to close it is a typo the renderer would send to the model verbatim.
    """
    start = content.rfind("{{")
    if start < 0 or "}}" in content[start + 2 :]:
        return None
    return content[start : start + 30]


def compile_template(messages: Sequence[Message]) -> Template:
    """Split every message at its placeholders once, so rendering is a join."""
    return Template(tuple(_compile(m) for m in messages), placeholders(messages))


def _compile(message: Message) -> CompiledMessage:
    parts = tuple(PLACEHOLDER.split(message.content))
    alone = len(parts) == 3 and not parts[0].strip() and not parts[2].strip()
    return CompiledMessage(message.role, parts, parts[1] if alone else None)


def coerce_variables(raw: Mapping[str, object]) -> dict[str, str]:
    """Values as text, for text renderings (the CLI, prompt test runs).

    Numbers and booleans by str(); a text part (`input_text` or `text`) gives its text; other
    content parts, objects, lists and null are refused (400 invalid_prompt_variables).
    """
    values: dict[str, str] = {}
    for key, value in raw.items():
        coerced = _coerce(key, value, None)
        if not isinstance(coerced, str):
            raise InvalidPromptVariables(
                f"Prompt variable {key!r} is a content part of type {coerced['type']!r}; only "
                "text renders here (content parts fill requests to /v1/chat/completions and "
                "/v1/responses).",
                param="variables",
            )
        values[key] = coerced
    return values


def coerce_request_variables(raw: Mapping[str, object], api: Api) -> dict[str, Value]:
    """Values for a request to `api`: text, or content parts that API takes.

    Numbers and booleans become strings. Text parts of either API are accepted and given the
    type `api` uses (`text` or `input_text`); any other part of the other API is refused naming
    the variable and the types that fit, as are objects, lists and null.
    """
    return {key: _coerce(key, value, api) for key, value in raw.items()}


def _coerce(key: str, value: object, api: Api | None) -> Value:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):  # bool is an int
        return str(value)
    if isinstance(value, Mapping) and isinstance(value.get("type"), str):
        kind: str = value["type"]
        if kind in TEXT_TYPES:
            text = value.get("text")
            if not isinstance(text, str):
                raise InvalidPromptVariables(
                    f"Prompt variable {key!r} is a {kind} part without a string `text`.",
                    param="variables",
                )
            return text if api is None else {"type": TEXT_PART[api], "text": text}
        known = any(kind in types for types in PART_TYPES.values())
        if known and (api is None or kind in PART_TYPES[api]):
            return {**value}
        if known and api is not None:
            raise InvalidPromptVariables(
                f"Prompt variable {key!r} is a content part of type {kind!r}, which "
                f"{ENDPOINTS[api]} does not take; use one of "
                f"{', '.join(sorted(PART_TYPES[api]))} there.",
                param="variables",
            )
    kind = "null" if value is None else type(value).__name__
    raise InvalidPromptVariables(
        f"Prompt variable {key!r} is {kind}; variable values must be strings, numbers, booleans "
        'or OpenAI content parts such as {"type": "input_image", ...}.',
        param="variables",
    )


def render(template: Template, values: Mapping[str, str], label: str) -> tuple[Message, ...]:
    """Render every message as text; `label` (name@version) names the prompt in the error."""
    _require(template, values, label)
    return tuple(message.render(values) for message in template.messages)


def render_request(
    template: Template, values: Mapping[str, Value], label: str, api: Api
) -> tuple[RenderedMessage, ...]:
    """Render every message for a request to `api`, content parts included.

    On /v1/responses the system and developer messages become `instructions`, which are text:
    there a part gives its text if it is a text part and is refused otherwise.
    """
    _require(template, values, label)
    instructions = api == "responses"
    return tuple(
        message.fill(values, text_only=instructions and message.role in SYSTEM_ROLES)
        for message in template.messages
    )


def _require(template: Template, values: Mapping[str, object], label: str) -> None:
    missing = [name for name in template.variables if name not in values]
    if missing:
        raise MissingPromptVariables(
            f"Missing variables for prompt {label}: {', '.join(missing)}",
            param="variables",
        )
