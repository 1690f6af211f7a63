"""OpenAI request and answer -> the message shapes tracing backends read (content capture only).

Pure and only called when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`: with capture
off no function here runs and no message content leaves the gateway.

Two shapes are made from the same request:

- OpenTelemetry GenAI (`gen_ai.input.messages`, `gen_ai.output.messages`,
  `gen_ai.system_instructions`): JSON arrays after the JSON schemas `gen-ai-input-messages.json`,
  `gen-ai-output-messages.json` and `gen-ai-system-instructions.json` of open-telemetry's
  semantic conventions (docs/gen-ai/, v1.40-v1.41; a copy is in tests/telemetry/schemas/).
  A message is `{"role", "parts": [{"type": "text", "content": ...}, ...]}`; an output message
  also has a `finish_reason` (`stop`, `length`, `content_filter`, `tool_call`, `error`). System
  and developer messages, and a Responses call's `instructions`, go to `gen_ai.system_instructions`
  as a list of parts, not into the input messages.
- OpenInference (`llm.input_messages.{i}.message.role|content`, `llm.output_messages...`,
  `input.value`, `output.value`): flattened attributes with zero-based indices
  (arize-ai.github.io/openinference/spec, "Messages"); content is the message's text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

Part = dict[str, Any]
Message = dict[str, Any]

SYSTEM_ROLES = frozenset({"system", "developer"})

# Chat's finish_reason and the Responses API's outcome -> OpenTelemetry's FinishReason values.
_CHAT_FINISH = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
}


@dataclass(frozen=True, slots=True)
class Conversation:
    """A request's messages in both shapes."""

    system: list[Part]
    """gen_ai.system_instructions: the parts of every system/developer message, in order."""
    messages: list[Message]
    """gen_ai.input.messages: every other message as {role, parts}."""
    flat: list[tuple[str, str]]
    """(role, text) of every message, system ones included: OpenInference's llm.input_messages."""


def otel_finish_reason(reason: str | None) -> str:
    """A chat finish_reason (or an already mapped Responses one) as OpenTelemetry's value."""
    if reason is None:
        return "error"
    return _CHAT_FINISH.get(reason, reason)


def conversation(request: Mapping[str, Any]) -> Conversation | None:
    """The messages of a chat completion (`messages`) or a Responses call (`input`,
    `instructions`); None when the request has neither."""
    system: list[Part] = []
    messages: list[Message] = []
    flat: list[tuple[str, str]] = []
    instructions = request.get("instructions")
    if isinstance(instructions, str):
        system.append(_text(instructions))
        flat.append(("system", instructions))
    items = request.get("messages")
    if items is None:
        items = request.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        return None if not system else Conversation(system, messages, flat)
    for item in items:
        if not isinstance(item, dict):
            continue
        role, parts = _item(item)
        flat.append((role, _joined(parts)))
        if role in SYSTEM_ROLES:
            system.extend(parts)
        else:
            messages.append({"role": role, "parts": parts})
    return Conversation(system, messages, flat)


ToolCall = tuple[str | None, str, str]
"""(id, name, arguments as JSON text) of a function call the model asked for."""


def output_message(
    text: str, finish_reason: str, tool_calls: Sequence[ToolCall] = ()
) -> list[Message]:
    """gen_ai.output.messages for one answer: its text (when any), the function calls it asks
    for (`tool_call` parts, arguments parsed when they are JSON) and why it ended."""
    parts = [_text(text)] if text else []
    for call_id, name, arguments in tool_calls:
        parts.append(_tool_call(call_id, name, _parsed(arguments)))
    return [{"role": "assistant", "parts": parts, "finish_reason": finish_reason}]


def openai_output(text: str, tool_calls: Sequence[ToolCall]) -> str:
    """OpenInference's output.value for an answer with function calls: the assistant message in
    OpenAI's chat shape, as JSON."""
    return dumps(
        {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for i, n, a in tool_calls
            ],
        }
    )


def _parsed(arguments: str) -> object:
    """Arguments as the JSON value they hold; as they came when not JSON (a cut-off stream)."""
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments


def embedding_texts(request: Mapping[str, Any]) -> list[str]:
    """The texts of an embeddings request (`input`: a string or a list of strings; token arrays
    are not text and are left out)."""
    value = request.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def dumps(value: object) -> str:
    """Compact JSON text (orjson)."""
    return orjson.dumps(value).decode()


# ---- one message -------------------------------------------------------------------------------


def _item(item: Mapping[str, Any]) -> tuple[str, list[Part]]:
    """(role, parts) of one chat message or one Responses input item."""
    kind = item.get("type")
    if kind == "function_call":  # Responses: a tool call the model made earlier
        return "assistant", [
            _tool_call(item.get("call_id"), item.get("name"), item.get("arguments"))
        ]
    if kind == "function_call_output":  # Responses: the tool's result
        return "tool", [_tool_response(item.get("call_id"), item.get("output"))]
    role = item.get("role")
    role = role if isinstance(role, str) else "user"
    if role == "tool":  # chat: a tool's result
        return role, [_tool_response(item.get("tool_call_id"), item.get("content"))]
    parts = _content(item.get("content"))
    for request in item.get("tool_calls") or ():
        if isinstance(request, dict):
            function = request.get("function")
            function = function if isinstance(function, dict) else {}
            name, arguments = function.get("name"), function.get("arguments")
            parts.append(_tool_call(request.get("id"), name, arguments))
    if kind not in (None, "message") and not parts:
        parts.append({**item, "type": _kind(kind)})  # another Responses item: kept as it came
    return role, parts


def _content(content: object) -> list[Part]:
    if isinstance(content, str):
        return [_text(content)]
    if not isinstance(content, list):
        return []
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(_text(part))
        elif isinstance(part, dict):
            parts.append(_part(part))
    return parts


def _part(part: Mapping[str, Any]) -> Part:
    """One content part: chat's text/image_url/input_audio/file, the Responses API's
    input_text/output_text/input_image/input_file; any other kept as a generic part."""
    kind = part.get("type")
    text = part.get("text")
    if kind in ("text", "input_text", "output_text") and isinstance(text, str):
        return _text(text)
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return _text(part["refusal"])
    if kind == "image_url" and isinstance(part.get("image_url"), dict):
        return _media(part["image_url"].get("url"), None, "image")
    if kind == "input_image":
        return _media(part.get("image_url"), part.get("file_id"), "image")
    if kind == "input_audio" and isinstance(part.get("input_audio"), dict):
        audio = part["input_audio"]
        fmt = audio.get("format")
        return {
            "type": "blob",
            "modality": "audio",
            "mime_type": f"audio/{fmt}" if isinstance(fmt, str) else None,
            "content": audio.get("data") if isinstance(audio.get("data"), str) else "",
        }
    if kind == "file" and isinstance(part.get("file"), dict):
        file = part["file"]
        return _media(file.get("file_data"), file.get("file_id"), "document")
    if kind == "input_file":
        return _media(
            part.get("file_data") or part.get("file_url"), part.get("file_id"), "document"
        )
    return {**part, "type": _kind(kind)}


def _kind(kind: object) -> str:
    return kind if isinstance(kind, str) else "unknown"


def _media(url: object, file_id: object, modality: str) -> Part:
    """A file by id, inline data (a `data:` URL, as a base64 blob) or a link."""
    if isinstance(file_id, str):
        return {"type": "file", "modality": modality, "file_id": file_id}
    if isinstance(url, str) and url.startswith("data:"):
        head, _, data = url.partition(",")
        mime = head[5:].split(";", 1)[0] or None
        return {"type": "blob", "modality": modality, "mime_type": mime, "content": data}
    return {"type": "uri", "modality": modality, "uri": url if isinstance(url, str) else ""}


def _text(text: str) -> Part:
    return {"type": "text", "content": text}


def _tool_call(call_id: object, name: object, arguments: object) -> Part:
    return {
        "type": "tool_call",
        "id": call_id if isinstance(call_id, str) else None,
        "name": name if isinstance(name, str) else "",
        "arguments": arguments,
    }


def _tool_response(call_id: object, response: object) -> Part:
    return {
        "type": "tool_call_response",
        "id": call_id if isinstance(call_id, str) else None,
        "response": response,
    }


def _joined(parts: Sequence[Part]) -> str:
    """A message's text for OpenInference's message.content: its text parts, joined."""
    texts = [p["content"] for p in parts if p.get("type") == "text"]
    return "".join(texts) if texts or not parts else dumps(parts)
