"""The built-in mock provider: deterministic OpenAI-shaped answers, offline."""

from __future__ import annotations

import orjson

from gateway.core.sse import SSETap
from gateway.upstream.mock import MockUpstream
from gateway.upstream.routing import Provider

MOCK = Provider("mock", "mock")
CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "You help Acme.\nMore."},
        {"role": "user", "content": "Hi"},
    ],
}


async def test_chat_answer_is_deterministic_and_reflects_the_prompt() -> None:
    """Same request, same bytes; the answer quotes the system prompt and the user."""
    body = orjson.dumps(CHAT)
    first = await (await MockUpstream().send(MOCK, "POST", "/chat/completions", [], body)).read()
    second = await (await MockUpstream().send(MOCK, "POST", "/chat/completions", [], body)).read()
    assert first == second
    doc = orjson.loads(first)
    assert doc["choices"][0]["message"]["content"] == (
        "Hello! Instructions: You help Acme. You said: Hi"
    )
    assert doc["usage"]["total_tokens"] > 0


async def test_chat_stream_carries_usage_only_when_asked() -> None:
    """The mock streams words and adds a usage chunk only with include_usage."""
    for include in (False, True):
        body = orjson.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": include}})
        response = await MockUpstream().send(MOCK, "POST", "/chat/completions", [], body)
        tap = SSETap(orjson.loads)
        async for piece in response.chunks():
            tap.feed(piece)
        assert (tap.outcome.usage is not None) is include
        assert tap.outcome.finish_reasons == ["stop"]


async def test_responses_and_models_and_unknown_paths() -> None:
    """The mock answers /responses and /models, and 404s anything else in OpenAI's shape."""
    mock = MockUpstream()
    resp = await mock.send(MOCK, "POST", "/responses", [], b'{"model":"m","input":"Hi"}')
    assert orjson.loads(await resp.read())["output"][0]["content"][0]["text"].endswith("Hi")
    models = await mock.send(MOCK, "GET", "/models", [], None)
    assert orjson.loads(await models.read())["data"][0]["id"] == "mock-model"
    missing = await mock.send(MOCK, "POST", "/audio/speech", [], b"{}")
    assert missing.status == 404
    assert "error" in orjson.loads(await missing.read())
