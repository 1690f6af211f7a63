"""The built-in `mock` provider: OpenAI's API answered offline, deterministically, in its format.

For demos, for trying the gateway without an API key, and for testing apps and prompt test suites
offline. The answer greets, quotes the first sentence of the system prompt and echoes the last
user message, so a rendered prompt's effect is visible in the output (`reply_text`). Answers follow
OpenAI's published schemas so the SDKs' helpers work against it:

- `POST /chat/completions` (mock_chat): text, JSON for `response_format`, tool calls, `n`,
  `logprobs`, streamed or not;
- `POST /responses` (mock_responses): the full Response object, and the full event sequence of a
  stream;
- `POST /embeddings` (mock_embeddings): deterministic unit vectors, float or base64;
- `GET /models` and `GET /models/{id}`.

Anything else is an OpenAI-shaped 404. The same request always gets the same bytes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote

import orjson

from gateway.upstream.mock_chat import chat
from gateway.upstream.mock_embeddings import embeddings
from gateway.upstream.mock_responses import responses
from gateway.upstream.mock_wire import (
    CREATED,
    BadRequest,
    MockResponse,
    error,
    json_response,
    reply_text,
)
from gateway.upstream.routing import Provider

__all__ = ["MODEL", "MockResponse", "MockUpstream", "reply_text"]

MODEL = "mock-model"
POSTS = {"/chat/completions": chat, "/responses": responses, "/embeddings": embeddings}


class MockUpstream:
    """Serves chat, responses, embeddings and models; anything else is an OpenAI-shaped 404."""

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
            return json_response(200, {"object": "list", "data": [model(MODEL)]})
        if method == "GET" and route.startswith("/models/") and route.count("/") == 2:
            # Any model can be asked for by name, so any name is a model here.
            return json_response(200, model(unquote(route.removeprefix("/models/"))))
        answer = POSTS.get(route)
        if method != "POST" or answer is None:
            return error(404, f"The mock provider does not serve {method} {route}.")
        try:
            doc = orjson.loads(body or b"")
        except orjson.JSONDecodeError:
            return error(400, "We could not parse the JSON body of your request.")
        if not isinstance(doc, dict):
            return error(400, "The request body must be a JSON object.")
        try:
            return answer(doc)
        except BadRequest as exc:
            return error(400, exc.message, param=exc.param)


def model(name: str) -> dict[str, object]:
    """A Model object as /models lists it."""
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "gateway"}
