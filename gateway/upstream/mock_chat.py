"""The mock's `POST /chat/completions`: OpenAI's chat completion and chunk stream, deterministic.

What the answer holds, in order of precedence:

- a tool call when `tool_choice` asks for one (`required`, a named function, or `allowed_tools`
  in `required` mode); its arguments are JSON valid against the function's `parameters` (every
  property when the function is `strict`) and `finish_reason` is `tool_calls`. With `auto` or
  `none` the mock answers text. After a `tool` result it answers text, except that `required`
  first calls each function not called yet (see mock_wire.forced_function);
- JSON for `response_format`: `{"answer": <reply>}` for `json_object`, an instance of the schema
  for `json_schema` (see mock_schema);
- else the reply text (mock_wire.reply_text).

`n` gives that many identical choices; `logprobs` and `top_logprobs` add a token per streamed
piece. Streams send, per choice, a role chunk, content (or tool-call argument) chunks and a finish
chunk, as OpenAI does; with `stream_options.include_usage` every chunk carries `"usage": null` and
a last chunk with no choices carries the usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.upstream.mock_schema import instance
from gateway.upstream.mock_wire import (
    CREATED,
    BadRequest,
    Function,
    MockResponse,
    as_int,
    count,
    digest,
    forced_function,
    json_response,
    pieces,
    reply_text,
    sse_data,
    sub_id,
    text_of,
    token_logprobs,
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the mock makes."""

    id: str
    name: str
    arguments: str


def chat(doc: Mapping[str, Any]) -> MockResponse:
    """Answer a chat completion request, as JSON or as a chunk stream."""
    messages = [m for m in _list(doc.get("messages")) if isinstance(m, dict)]
    n = as_int(doc, "n", 1, 1, 128)
    wants_logprobs = doc.get("logprobs") is True
    top = as_int(doc, "top_logprobs", 0, 0, 20)
    if top and not wants_logprobs:
        raise BadRequest("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    system = next(
        (text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")),
        "",
    )
    user = next(
        (text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    text = reply_text(system, user)
    seed = digest(doc)
    function = _forced(doc, messages)
    calls = [_call(function, text, seed, i) for i in range(n)] if function else []
    content = None if function else _content(doc.get("response_format"), text)
    produced = count(calls[0].arguments) if calls else count(content or "")
    prompt_tokens = sum(count(text_of(m.get("content"))) for m in messages)
    usage = _usage(prompt_tokens, produced * n)
    base = {
        "id": "chatcmpl-mock" + seed[:24],
        "object": "chat.completion.chunk" if doc.get("stream") is True else "chat.completion",
        "created": CREATED,
        "model": str(doc.get("model") or "mock-model"),
        "service_tier": "default",
    }
    top_or_none = top if wants_logprobs else None
    if doc.get("stream") is True:
        options = doc.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        chunks = [
            chunk
            for i in range(n)
            for chunk in _choice_chunks(i, content, calls[i] if calls else None, top_or_none)
        ]
        if not include_usage:
            return sse_data({**base, "choices": [c]} for c in chunks)
        return sse_data(
            [
                *({**base, "choices": [c], "usage": None} for c in chunks),
                {**base, "choices": [], "usage": usage},
            ]
        )
    choices = [_choice(i, content, calls[i] if calls else None, top_or_none) for i in range(n)]
    return json_response(200, {**base, "choices": choices, "usage": usage})


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """Usage with the token details OpenAI sends, all zero."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _forced(doc: Mapping[str, Any], messages: list[dict[str, Any]]) -> Function | None:
    functions = []
    for tool in _list(doc.get("tools")):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(fn, dict):
            functions.append(
                Function(str(fn.get("name", "")), fn.get("parameters"), fn.get("strict") is True)
            )
    choice = doc.get("tool_choice")
    named = allowed = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        named = str((choice.get("function") or {}).get("name", ""))
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        spec = choice.get("allowed_tools") or {}
        if spec.get("mode") == "required":
            allowed = [
                str((t.get("function") or {}).get("name", ""))
                for t in _list(spec.get("tools"))
                if isinstance(t, dict)
            ]
    called = None
    if messages and messages[-1].get("role") == "tool":
        called = frozenset(
            str(call.get("function", {}).get("name"))
            for m in messages
            if m.get("role") == "assistant"
            for call in _list(m.get("tool_calls"))
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        )
    return forced_function(functions, choice, named=named, allowed=allowed, called=called)


def _call(function: Function, text: str, seed: str, index: int) -> ToolCall:
    parameters = function.parameters if function.parameters is not None else {"type": "object"}
    arguments = orjson.dumps(instance(parameters, text, strict=function.strict)).decode()
    return ToolCall("call_" + sub_id(seed, index, function.name), function.name, arguments)


def _content(response_format: Any, text: str) -> str:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return orjson.dumps({"answer": text}).decode()
    if kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        if not isinstance(spec, dict):
            raise BadRequest(
                "Missing required parameter: 'response_format.json_schema'.",
                "response_format.json_schema",
            )
        schema = spec.get("schema", {"type": "object"})
        return orjson.dumps(instance(schema, text, strict=spec.get("strict") is True)).decode()
    return text


def _logprobs(content: str | None, top: int | None) -> dict[str, Any] | None:
    if top is None:
        return None
    tokens = token_logprobs(pieces(content), top) if content is not None else None
    return {"content": tokens, "refusal": None}


def _message(content: str | None, call: ToolCall | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": [],
    }
    if call is not None:
        function = {"name": call.name, "arguments": call.arguments}
        message["tool_calls"] = [{"id": call.id, "type": "function", "function": function}]
    return message


def _choice(
    index: int, content: str | None, call: ToolCall | None, top: int | None
) -> dict[str, Any]:
    return {
        "index": index,
        "message": _message(content, call),
        "logprobs": _logprobs(content, top),
        "finish_reason": "tool_calls" if call else "stop",
    }


def _choice_chunks(
    index: int, content: str | None, call: ToolCall | None, top: int | None
) -> list[dict[str, Any]]:
    """One choice as OpenAI streams it: the role, the pieces, then the finish reason."""

    def chunk(delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> Any:
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    if call is not None:
        head = {"index": 0, "id": call.id, "type": "function"}
        first = {**head, "function": {"name": call.name, "arguments": ""}}
        return [
            chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None}),
            *(
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in pieces(call.arguments)
            ),
            chunk({}, finish="tool_calls"),
        ]
    tokens = pieces(content or "")
    logprobs = token_logprobs(tokens, top) if top is not None else None
    return [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        *(
            chunk(
                {"content": token},
                {"content": [logprobs[i]], "refusal": None} if logprobs is not None else None,
            )
            for i, token in enumerate(tokens)
        ),
        chunk({}, finish="stop"),
    ]
