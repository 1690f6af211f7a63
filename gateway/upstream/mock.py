"""The built-in `mock` provider: answers chat completions and responses offline, deterministically.

For demos, for trying the gateway without an API key, and for running prompt test suites offline.
The answer greets, quotes the first sentence of the system prompt and echoes the last user message,
so a rendered prompt's effect is visible in the output. It also lists its model at /models.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from gateway.upstream.base import Headers
from gateway.upstream.routing import Provider

CREATED = 1_700_000_000  # a fixed timestamp keeps every answer byte-for-byte repeatable
JSON: Headers = [(b"content-type", b"application/json")]
SSE: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class MockResponse:
    """A finished answer held in memory, streamed in pieces when it is an event stream."""

    def __init__(self, status: int, headers: Headers, pieces: list[bytes]) -> None:
        self.status = status
        self.headers = headers
        self._pieces = pieces

    async def read(self) -> bytes:
        return b"".join(self._pieces)

    async def chunks(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece

    async def close(self) -> None:
        return None


class MockUpstream:
    """Serves /chat/completions, /responses and /models; anything else is an OpenAI-shaped 404."""

    async def send(
        self,
        provider: Provider,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
    ) -> MockResponse:
        route = path.split("?", 1)[0]
        if method == "GET" and route == "/models":
            return _json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "mock-model",
                            "object": "model",
                            "created": CREATED,
                            "owned_by": "gateway",
                        }
                    ],
                },
            )
        if method != "POST" or route not in ("/chat/completions", "/responses"):
            return _error(404, f"The mock provider does not serve {method} {route}.")
        try:
            doc = orjson.loads(body or b"")
        except orjson.JSONDecodeError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(doc, dict):
            return _error(400, "The request body must be a JSON object.")
        if route == "/chat/completions":
            return _chat(doc)
        return _responses(doc)


def reply_text(system: str, user: str) -> str:
    """The mock's answer: a greeting, the system prompt's first sentence, the user's words.

    Asked to grade with PASS or FAIL (the judge prompt), the mock passes, so prompt test suites
    with judge criteria run offline.
    """
    if "PASS or FAIL" in system:
        return "PASS\nThe mock provider passes every criterion."
    flat = " ".join(system.split())
    first = flat.split(". ", 1)[0].rstrip(".") + "." if flat else "(no system prompt)"
    return f"Hello! Instructions: {first} You said: {user or '(nothing)'}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _count(text: str) -> int:
    return max(1, len(text.split()))


def _chat(doc: dict[str, Any]) -> MockResponse:
    messages = [m for m in doc.get("messages") or [] if isinstance(m, dict)]
    system = next(
        (_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")), ""
    )
    user = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    model = str(doc.get("model") or "mock-model")
    text = reply_text(system, user)
    prompt_tokens = sum(_count(_text(m.get("content"))) for m in messages)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": _count(text),
        "total_tokens": prompt_tokens + _count(text),
    }
    ident = "chatcmpl-mock-" + hashlib.sha256(orjson.dumps(messages)).hexdigest()[:16]
    if not doc.get("stream"):
        return _json(
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )
    options = doc.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    base = {"id": ident, "object": "chat.completion.chunk", "created": CREATED, "model": model}
    extra = {"usage": None} if include_usage else {}
    events = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            **extra,
        }
    ]
    for word in _words(text):
        events.append(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": word},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
                **extra,
            }
        )
    events.append(
        {
            **base,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
            **extra,
        }
    )
    if include_usage:
        events.append({**base, "choices": [], "usage": usage})
    pieces = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    return MockResponse(200, SSE, pieces)


def _responses(doc: dict[str, Any]) -> MockResponse:
    raw_input = doc.get("input")
    items = (
        [{"role": "user", "content": raw_input}]
        if isinstance(raw_input, str)
        else [i for i in raw_input or [] if isinstance(i, dict)]
    )
    system = _text(doc.get("instructions")) or next(
        (_text(i.get("content")) for i in items if i.get("role") in ("system", "developer")), ""
    )
    user = next((_text(i.get("content")) for i in reversed(items) if i.get("role") == "user"), "")
    model = str(doc.get("model") or "mock-model")
    text = reply_text(system, user)
    input_tokens = sum(_count(_text(i.get("content"))) for i in items) + _count(system)
    ident = "resp_mock" + hashlib.sha256(orjson.dumps(items)).hexdigest()[:16]
    message = {
        "id": "msg_" + ident[5:],
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    response = {
        "id": ident,
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": model,
        "output": [message],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": doc.get("temperature"),
        "top_p": None,
        "max_output_tokens": doc.get("max_output_tokens"),
        "error": None,
        "incomplete_details": None,
        "instructions": doc.get("instructions"),
        "metadata": {},
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": _count(text),
            "total_tokens": input_tokens + _count(text),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
    if not doc.get("stream"):
        return _json(200, response)
    created = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"type": "response.created", "response": created}),
    ]
    for word in _words(text):
        events.append(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "item_id": message["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word,
                },
            )
        )
    events.append(("response.completed", {"type": "response.completed", "response": response}))
    pieces = [
        f"event: {name}\n".encode()
        + b"data: "
        + orjson.dumps({**data, "sequence_number": i})
        + b"\n\n"
        for i, (name, data) in enumerate(events)
    ]
    return MockResponse(200, SSE, pieces)


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _json(status: int, doc: dict[str, Any]) -> MockResponse:
    return MockResponse(status, JSON, [orjson.dumps(doc)])


def _error(status: int, message: str) -> MockResponse:
    return _json(
        status,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )
