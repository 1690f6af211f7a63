"""Templates: `{{name}}` placeholders, compiled once, rendered in a single pass."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.errors import InvalidPromptVariables, MissingPromptVariables

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message of a template or a rendered prompt."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    """A message split at its placeholders: even indexes are text, odd ones variable names."""

    role: str
    parts: tuple[str, ...]

    def render(self, values: Mapping[str, str]) -> Message:
        """Fill the placeholders; values are inserted literally, never expanded again."""
        parts = self.parts
        if len(parts) == 1:
            return Message(self.role, parts[0])
        out = list(parts)
        for i in range(1, len(out), 2):
            out[i] = values[out[i]]
        return Message(self.role, "".join(out))


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


def compile_template(messages: Sequence[Message]) -> Template:
    """Split every message at its placeholders once, so rendering is a join."""
    compiled = tuple(CompiledMessage(m.role, tuple(PLACEHOLDER.split(m.content))) for m in messages)
    return Template(compiled, placeholders(messages))


def coerce_variables(raw: Mapping[str, object]) -> dict[str, str]:
    """Turn values into strings: numbers and booleans by str(); objects, lists and null refused."""
    values: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            values[key] = value
        elif isinstance(value, int | float):  # bool is an int
            values[key] = str(value)
        elif (
            isinstance(value, Mapping)
            and value.get("type") == "input_text"
            and isinstance(value.get("text"), str)
        ):
            # The Responses API's typed text variable: {"type": "input_text", "text": "..."}.
            values[key] = value["text"]
        else:
            kind = "null" if value is None else type(value).__name__
            raise InvalidPromptVariables(
                f"Prompt variable {key!r} is {kind}; variable values must be strings, "
                "numbers or booleans.",
                param="variables",
            )
    return values


def render(template: Template, values: Mapping[str, str], label: str) -> tuple[Message, ...]:
    """Render every message; `label` (name@version) names the prompt in the error."""
    missing = [name for name in template.variables if name not in values]
    if missing:
        raise MissingPromptVariables(
            f"Missing variables for prompt {label}: {', '.join(missing)}",
            param="variables",
        )
    return tuple(message.render(values) for message in template.messages)
