"""What the mock provider's endpoints share: the reply text, tokens, ids, tools and wire framing.

Everything here is pure and deterministic: no clock, no randomness. Timestamps are the fixed
CREATED, ids and logprobs are derived from sha256 of the request, so the same request always gets
the same bytes back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.upstream.base import Headers

CREATED = 1_700_000_000  # a fixed timestamp keeps every answer byte-for-byte repeatable
JSON: Headers = [(b"content-type", b"application/json")]
SSE: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
# Alternatives offered in top_logprobs after the chosen token, each less likely than the last.
ALTERNATIVES = (" the", ",", " a", ".", " and", " to", " of", " is", " in", " it")


class MockResponse:
    """A finished answer held in memory, streamed in pieces when it is an event stream."""

    def __init__(self, status: int, headers: Headers, pieces: list[bytes]) -> None:
        self.status = status
        self.headers = headers
        self._pieces = pieces
        # An event stream has no declared length (it is relayed as it comes); JSON has one.
        self.length: int | None = None if headers is SSE else sum(map(len, pieces))
        self._next = 0

    @property
    def ended(self) -> bool:
        return self._next >= len(self._pieces)

    async def read(self) -> bytes:
        self._next = len(self._pieces)
        return b"".join(self._pieces)

    async def next_chunk(self) -> bytes:
        if self._next >= len(self._pieces):
            return b""
        self._next += 1
        return self._pieces[self._next - 1]

    async def close(self) -> None:
        return None


class BadRequest(Exception):
    """A request the mock refuses as OpenAI would: 400 `invalid_request_error` naming `param`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Function:
    """A function tool offered by the request, whatever the API's spelling of it."""

    name: str
    parameters: Any
    strict: bool


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


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text of its parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def count(text: str) -> int:
    """The mock's token count: one per word, at least one."""
    return max(1, len(text.split()))


def pieces(text: str) -> list[str]:
    """The text as the tokens the mock streams: words, each after the first led by its space."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def digest(doc: Mapping[str, Any]) -> str:
    """A hex digest of the request, the same whether or not it asked for a stream."""
    core = {k: v for k, v in doc.items() if k not in ("stream", "stream_options")}
    return hashlib.sha256(orjson.dumps(core, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sub_id(seed: str, *parts: object) -> str:
    """A 24-hex-digit id derived from `seed` and `parts`, for items and tool calls."""
    text = seed + "".join(f"/{p}" for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def token_logprobs(tokens: Iterable[str], top: int) -> list[dict[str, Any]]:
    """Log probabilities of `tokens`, each with `top` alternatives (the token itself first).

    Shaped as chat's ChatCompletionTokenLogprob and the Responses API's LogProb alike.
    """
    out = []
    for token in tokens:
        logprob = -round(hashlib.sha256(token.encode()).digest()[0] / 2550, 4)
        others = [a for a in ALTERNATIVES if a != token]
        choices = [(token, logprob)] + [(a, logprob - 1.5 * (k + 1)) for k, a in enumerate(others)]
        out.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": round(p, 4), "bytes": list(t.encode())}
                    for t, p in choices[:top]
                ],
            }
        )
    return out


def forced_function(
    functions: list[Function],
    choice: Any,
    *,
    named: str | None,
    allowed: list[str] | None,
    called: frozenset[str] | None,
) -> Function | None:
    """The function the model must call, or None when it answers with text.

    `required` (or an `allowed_tools` choice in `required` mode) calls the first (allowed)
    function; a named choice calls that one; `auto`, `none` and no choice answer text. `named`
    and `allowed` are the names already read from the API's own spelling of the choice.

    `called` is None unless the last message is a tool's result; then it names the functions
    already called in the conversation. A named choice then answers text, and `required` calls
    the first (allowed) function not called yet, or answers text once every one was: an agent
    loop always ends, and one that must finish with an output tool (pydantic-ai) reaches it.
    """
    if (choice == "required" or named is not None or allowed is not None) and not functions:
        raise BadRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            "tool_choice",
        )
    if named is not None:
        found = next((f for f in functions if f.name == named), None)
        if found is None:
            raise BadRequest(
                f"Invalid value for 'tool_choice': function {named!r} not found in 'tools'.",
                "tool_choice",
            )
        return found if called is None else None
    if choice != "required" and allowed is None:
        return None
    pool = [f for f in functions if (allowed is None or f.name in allowed)]
    if called is not None:
        pool = [f for f in pool if f.name not in called]
    return pool[0] if pool else None


def json_response(status: int, doc: Mapping[str, Any]) -> MockResponse:
    """A JSON answer."""
    return MockResponse(status, JSON, [orjson.dumps(doc)])


def error(status: int, message: str, *, param: str | None = None) -> MockResponse:
    """An OpenAI-shaped error answer."""
    kind = "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return json_response(status, body)


def sse_data(chunks: Iterable[Mapping[str, Any]]) -> MockResponse:
    """Chat's event stream: one `data:` line per chunk, then `data: [DONE]`."""
    framed = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks]
    return MockResponse(200, SSE, [*framed, b"data: [DONE]\n\n"])


def sse_events(events: Iterable[Mapping[str, Any]]) -> MockResponse:
    """The Responses API's event stream: `event: TYPE` and `data:` per event, no [DONE]."""
    framed = [
        b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        for event in events
    ]
    return MockResponse(200, SSE, framed)


def as_int(doc: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter within [low, high]; absent or null gives `default`."""
    value = doc.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(
            f"Invalid value for {name!r}: expected an integer from {low} to {high}, got {value!r}.",
            name,
        )
    return value
