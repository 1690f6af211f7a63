"""The mock's `POST /responses`: OpenAI's Response object and its full event stream.

The output is one item:

- a `function_call` when `tool_choice` asks for one (`required`, `{"type": "function", "name"}`,
  or `allowed_tools` in `required` mode); its arguments validate against the function's
  `parameters` (strict by default, as in the Responses API: every property is filled). After a
  `function_call_output` it answers text, except that `required` first calls each function not
  called yet (see mock_wire.forced_function);
- else a `message` with one `output_text` part: JSON for `text.format` (`{"answer": <reply>}` for
  `json_object`, an instance of the schema for `json_schema`), or the reply text. Its `logprobs`
  are filled when `include` names `message.output_text.logprobs` (with `top_logprobs`).

A stream sends what OpenAI sends: `response.created` and `response.in_progress` (status
`in_progress`, no output, `usage: null`), `response.output_item.added`, then for a message
`response.content_part.added`, one `response.output_text.delta` per word,
`response.output_text.done` and `response.content_part.done`, or for a function call
`response.function_call_arguments.delta`s and `.done`; then `response.output_item.done` and
`response.completed` with the whole Response. Every event has its `sequence_number`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.upstream.mock_schema import instance
from gateway.upstream.mock_wire import (
    CREATED,
    Function,
    MockResponse,
    as_int,
    count,
    digest,
    forced_function,
    json_response,
    pieces,
    reply_text,
    sse_events,
    sub_id,
    text_of,
    token_logprobs,
)

LOGPROBS = "message.output_text.logprobs"


def responses(doc: Mapping[str, Any]) -> MockResponse:
    """Answer a Responses API request, as one Response or as its event stream."""
    raw = doc.get("input")
    items = (
        [{"role": "user", "content": raw}]
        if isinstance(raw, str)
        else [i for i in raw if isinstance(i, dict)]
        if isinstance(raw, list)
        else []
    )
    instructions = doc.get("instructions")
    system = instructions if isinstance(instructions, str) else ""
    system = system or next(
        (text_of(i.get("content")) for i in items if i.get("role") in ("system", "developer")), ""
    )
    user = next((text_of(i.get("content")) for i in reversed(items) if i.get("role") == "user"), "")
    text = reply_text(system, user)
    seed = digest(doc)
    top = as_int(doc, "top_logprobs", 0, 0, 20)
    include = doc.get("include")
    wants_logprobs = isinstance(include, list) and LOGPROBS in include
    tools = [t for t in _list(doc.get("tools")) if isinstance(t, dict)]
    called = None
    if items and items[-1].get("type") == "function_call_output":
        called = frozenset(str(i.get("name")) for i in items if i.get("type") == "function_call")
    function = _forced(tools, doc.get("tool_choice"), called)
    fmt = _dict(doc.get("text")).get("format")
    if function is not None:
        item = _function_call(function, text, seed)
        produced = count(item["arguments"])
    else:
        item = _message(_content(fmt, text), seed, top if wants_logprobs else None)
        produced = count(item["content"][0]["text"])
    used = sum(count(text_of(i.get("content"))) for i in items) + (count(system) if system else 0)
    response = _response(doc, seed, fmt, tools, item, used, produced)
    if doc.get("stream") is not True:
        return json_response(200, response)
    return sse_events(_events(response, item, top if wants_logprobs else None))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _forced(
    tools: list[dict[str, Any]], choice: Any, called: frozenset[str] | None
) -> Function | None:
    functions = [
        # Responses API function tools are strict unless they say otherwise.
        Function(str(t.get("name", "")), t.get("parameters"), t.get("strict") is not False)
        for t in tools
        if t.get("type") == "function"
    ]
    named = allowed = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        named = str(choice.get("name", ""))
    if (
        isinstance(choice, dict)
        and choice.get("type") == "allowed_tools"
        and choice.get("mode") == "required"
    ):
        allowed = [str(t.get("name", "")) for t in _list(choice.get("tools"))]
    return forced_function(functions, choice, named=named, allowed=allowed, called=called)


def _function_call(function: Function, text: str, seed: str) -> dict[str, Any]:
    parameters = function.parameters if function.parameters is not None else {"type": "object"}
    return {
        "id": "fc_" + sub_id(seed, "item"),
        "type": "function_call",
        "status": "completed",
        "call_id": "call_" + sub_id(seed, "call"),
        "name": function.name,
        "arguments": orjson.dumps(instance(parameters, text, strict=function.strict)).decode(),
    }


def _message(content: str, seed: str, top: int | None) -> dict[str, Any]:
    part = {
        "type": "output_text",
        "text": content,
        "annotations": [],
        "logprobs": token_logprobs(pieces(content), top) if top is not None else [],
    }
    return {
        "id": "msg_" + sub_id(seed, "item"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }


def _content(fmt: Any, text: str) -> str:
    kind = _dict(fmt).get("type")
    if kind == "json_object":
        return orjson.dumps({"answer": text}).decode()
    if kind == "json_schema":
        schema = _dict(fmt).get("schema", {"type": "object"})
        strict = _dict(fmt).get("strict") is True
        return orjson.dumps(instance(schema, text, strict=strict)).decode()
    return text


def _echo(doc: Mapping[str, Any], key: str, default: Any, kinds: type | tuple[type, ...]) -> Any:
    """The request's value for `key` when it has the right type, else what OpenAI defaults to."""
    value = doc.get(key)
    return value if isinstance(value, kinds) and not isinstance(value, bool) else default


def _response(
    doc: Mapping[str, Any],
    seed: str,
    fmt: Any,
    tools: list[dict[str, Any]],
    item: dict[str, Any],
    used: int,
    produced: int,
) -> dict[str, Any]:
    """The completed Response with every field OpenAI's schema requires, request values echoed."""
    response: dict[str, Any] = {
        "id": "resp_mock" + seed[:24],
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "background": False,
        "completed_at": CREATED,
        "error": None,
        "incomplete_details": None,
        "instructions": doc.get("instructions")
        if isinstance(doc.get("instructions"), str | list)
        else None,
        "max_output_tokens": _echo(doc, "max_output_tokens", None, int),
        "max_tool_calls": _echo(doc, "max_tool_calls", None, int),
        "model": str(doc.get("model") or "mock-model"),
        "output": [item],
        "parallel_tool_calls": doc.get("parallel_tool_calls") is not False,
        "previous_response_id": _echo(doc, "previous_response_id", None, str),
        "prompt_cache_key": _echo(doc, "prompt_cache_key", None, str),
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": _echo(doc, "safety_identifier", None, str),
        "service_tier": "default",
        "store": doc.get("store") is not False,
        "temperature": _echo(doc, "temperature", 1.0, (int, float)),
        "text": {
            "format": fmt if isinstance(fmt, dict) else {"type": "text"},
            "verbosity": "medium",
        },
        "tool_choice": doc.get("tool_choice") or "auto",
        "tools": [_tool(t) for t in tools],
        "top_logprobs": _echo(doc, "top_logprobs", 0, int),
        "top_p": _echo(doc, "top_p", 1.0, (int, float)),
        "truncation": "auto" if doc.get("truncation") == "auto" else "disabled",
        "usage": {
            "input_tokens": used,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": produced,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": used + produced,
        },
        "metadata": _dict(doc.get("metadata")),
    }
    if isinstance(doc.get("user"), str):
        response["user"] = doc["user"]
    return response


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the Response echoes it: function tools with their defaults filled in."""
    if tool.get("type") != "function":
        return tool
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict") is not False,
    }


def _events(
    response: dict[str, Any], item: dict[str, Any], top: int | None
) -> list[dict[str, Any]]:
    """The whole event sequence of a streamed response, numbered."""
    started = {**response, "status": "in_progress", "completed_at": None, "output": []}
    started["usage"] = None
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": _opened(item)},
    ]
    where = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "function_call":
        events += [
            {"type": "response.function_call_arguments.delta", **where, "delta": piece}
            for piece in pieces(item["arguments"])
        ]
        events.append(
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        )
    else:
        part = item["content"][0]
        at = {**where, "content_index": 0}
        tokens = pieces(part["text"])
        logprobs = [_short(lp) for lp in token_logprobs(tokens, top)] if top is not None else None
        empty = {**part, "text": "", "logprobs": []}
        events.append({"type": "response.content_part.added", **at, "part": empty})
        events += [
            {
                "type": "response.output_text.delta",
                **at,
                "delta": token,
                "logprobs": [logprobs[i]] if logprobs is not None else [],
            }
            for i, token in enumerate(tokens)
        ]
        events += [
            {
                "type": "response.output_text.done",
                **at,
                "text": part["text"],
                "logprobs": logprobs or [],
            },
            {"type": "response.content_part.done", **at, "part": part},
        ]
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response},
    ]
    return [{**event, "sequence_number": i} for i, event in enumerate(events)]


def _opened(item: dict[str, Any]) -> dict[str, Any]:
    """The item as `output_item.added` shows it: in progress, nothing generated yet."""
    if item["type"] == "function_call":
        return {**item, "status": "in_progress", "arguments": ""}
    return {**item, "status": "in_progress", "content": []}


def _short(logprob: dict[str, Any]) -> dict[str, Any]:
    """A LogProb as stream events carry it (ResponseLogProb): no bytes."""
    return {
        "token": logprob["token"],
        "logprob": logprob["logprob"],
        "top_logprobs": [
            {"token": t["token"], "logprob": t["logprob"]} for t in logprob["top_logprobs"]
        ],
    }
