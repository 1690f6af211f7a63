"""The built-in mock provider: deterministic answers in OpenAI's wire format, offline.

Every answer is checked against OpenAI's published schemas (openai_schemas.json, see
schema_validation.py): non-streamed bodies whole, streams chunk by chunk and event by event.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from gateway.core.sse import SSETap
from gateway.upstream.mock import MockUpstream
from gateway.upstream.mock_schema import instance
from gateway.upstream.mock_wire import reply_text
from gateway.upstream.routing import Provider
from tests.upstream.schema_validation import assert_valid, schema_errors

MOCK = Provider("mock", "mock")
CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "You help Acme.\nMore."},
        {"role": "user", "content": "Hi"},
    ],
}
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
}
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": WEATHER}
SCHEMA_FORMAT = {
    "name": "answer",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"title": {"type": "string"}, "score": {"type": "number"}},
        "required": ["title", "score"],
        "additionalProperties": False,
    },
}
CHAT_CASES = {
    "text": CHAT,
    "n-logprobs": {**CHAT, "n": 2, "logprobs": True, "top_logprobs": 3},
    "json-object": {**CHAT, "response_format": {"type": "json_object"}},
    "json-schema": {
        **CHAT,
        "response_format": {"type": "json_schema", "json_schema": SCHEMA_FORMAT},
    },
    "tool-required": {**CHAT, "tools": [CHAT_TOOL], "tool_choice": "required", "n": 2},
    "tool-named": {
        **CHAT,
        "tools": [CHAT_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "logprobs": True,
    },
}
RESPONSES = {"model": "m", "input": "Hi", "instructions": "You help Acme."}
RESPONSES_CASES = {
    "text": RESPONSES,
    "messages": {
        "model": "m",
        "input": [
            {"role": "developer", "content": "You help Acme."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ],
    },
    "logprobs": {**RESPONSES, "include": ["message.output_text.logprobs"], "top_logprobs": 2},
    "json-schema": {**RESPONSES, "text": {"format": {"type": "json_schema", **SCHEMA_FORMAT}}},
    "json-object": {**RESPONSES, "text": {"format": {"type": "json_object"}}},
    "tool-required": {**RESPONSES, "tools": [RESPONSES_TOOL], "tool_choice": "required"},
    "tool-named": {
        **RESPONSES,
        "tools": [RESPONSES_TOOL],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "metadata": {"k": "v"},
        "temperature": 0.2,
    },
}


async def send(method: str, path: str, doc: Any = None) -> tuple[int, bytes]:
    """The mock's status and body for one request."""
    body = orjson.dumps(doc) if doc is not None else None
    response = await MockUpstream().send(MOCK, method, path, [], body)
    return response.status, await response.read()


async def post(path: str, doc: Any) -> Any:
    """The JSON body of a successful POST."""
    status, body = await send("POST", path, doc)
    assert status == 200, body
    return orjson.loads(body)


def data_lines(body: bytes) -> list[Any]:
    """Chat's SSE chunks, checking the `data: ...` framing and the final [DONE]."""
    blocks = body.decode().split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks[:-2])
    return [orjson.loads(b.removeprefix("data: ")) for b in blocks[:-2]]


def events(body: bytes) -> list[Any]:
    """The Responses API's SSE events, checking each is `event: TYPE\\ndata: JSON`."""
    blocks = body.decode().split("\n\n")
    assert blocks[-1] == ""
    found = []
    for block in blocks[:-1]:
        name, data = block.split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        found.append(event)
    return found


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


def test_judge_prompt_passes() -> None:
    """Asked to answer PASS or FAIL, the mock passes, so judged test suites run offline."""
    assert reply_text("Answer PASS or FAIL.", "x").startswith("PASS\n")


async def test_chat_stream_carries_usage_only_when_asked() -> None:
    """The mock streams words and adds a usage chunk only with include_usage."""
    for include in (False, True):
        body = orjson.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": include}})
        response = await MockUpstream().send(MOCK, "POST", "/chat/completions", [], body)
        tap = SSETap(orjson.loads)
        while piece := await response.next_chunk():
            tap.feed(piece)
        assert response.ended
        assert (tap.outcome.usage is not None) is include
        assert tap.outcome.finish_reasons == ["stop"]


@pytest.mark.parametrize("case", CHAT_CASES)
async def test_chat_answers_match_openai_schema(case: str) -> None:
    """Every chat answer, and every chunk of its stream, is valid per OpenAI's schema."""
    assert_valid("CreateChatCompletionResponse", await post("/chat/completions", CHAT_CASES[case]))
    for include in (False, True):
        options = {"stream": True, "stream_options": {"include_usage": include}}
        _, body = await send("POST", "/chat/completions", {**CHAT_CASES[case], **options})
        chunks = data_lines(body)
        for chunk in chunks:
            assert_valid("CreateChatCompletionStreamResponse", chunk)
        assert all(("usage" in c) is include for c in chunks)
        if include:
            assert [c["usage"] is None for c in chunks] == [True] * (len(chunks) - 1) + [False]
            assert chunks[-1]["choices"] == []


@pytest.mark.parametrize("case", CHAT_CASES)
async def test_chat_stream_carries_what_the_answer_does(case: str) -> None:
    """Reassembling the chunks gives the non-streamed choices: content, tool calls, logprobs."""
    whole = await post("/chat/completions", CHAT_CASES[case])
    _, body = await send("POST", "/chat/completions", {**CHAT_CASES[case], "stream": True})
    chunks = data_lines(body)
    assert {c["id"] for c in chunks} == {whole["id"]}
    for choice in whole["choices"]:
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == choice["index"]]
        assert mine[0]["delta"]["role"] == "assistant"
        assert [m["finish_reason"] for m in mine] == [None] * (len(mine) - 1) + [
            choice["finish_reason"]
        ]
        message = choice["message"]
        if message.get("tool_calls"):
            deltas = [d for m in mine for d in m["delta"].get("tool_calls", [])]
            first, rest = deltas[0], deltas[1:]
            call = message["tool_calls"][0]
            assert first == {**call, "index": 0, "function": {**call["function"], "arguments": ""}}
            assert all(set(d) == {"index", "function"} for d in rest)
            assert (
                "".join(d["function"]["arguments"] for d in rest) == call["function"]["arguments"]
            )
        else:
            assert "".join(m["delta"].get("content") or "" for m in mine) == message["content"]
        if choice["logprobs"] and choice["logprobs"]["content"] is not None:
            streamed = [t for m in mine if m["logprobs"] for t in m["logprobs"]["content"]]
            assert streamed == choice["logprobs"]["content"]


async def test_chat_structured_output_and_tool_arguments_validate() -> None:
    """json_schema content and tool-call arguments are JSON valid against the given schemas."""
    doc = await post("/chat/completions", CHAT_CASES["json-schema"])
    content = orjson.loads(doc["choices"][0]["message"]["content"])
    Draft202012Validator(SCHEMA_FORMAT["schema"]).validate(content)
    assert content["title"] == "Hello! Instructions: You help Acme. You said: Hi"
    doc = await post("/chat/completions", CHAT_CASES["tool-required"])
    assert [c["index"] for c in doc["choices"]] == [0, 1]
    for choice in doc["choices"]:
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] is None
        call = choice["message"]["tool_calls"][0]
        assert call["id"].startswith("call_") and call["type"] == "function"
        Draft202012Validator(WEATHER).validate(orjson.loads(call["function"]["arguments"]))
    ids = {c["message"]["tool_calls"][0]["id"] for c in doc["choices"]}
    assert len(ids) == 2
    json_object = await post("/chat/completions", CHAT_CASES["json-object"])
    assert isinstance(orjson.loads(json_object["choices"][0]["message"]["content"]), dict)


def tool_turn(name: str, call_id: str) -> list[dict[str, Any]]:
    """An assistant message calling `name`, and the tool's answer to it."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "22C"},
    ]


async def test_chat_answers_text_after_a_tool_result_or_with_auto() -> None:
    """After a tool result (every tool called), or with tool_choice auto, the mock answers text."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        after_tool = {
            **CHAT,
            "tools": [CHAT_TOOL],
            "tool_choice": choice,
            "messages": [*CHAT["messages"], *tool_turn("get_weather", "call_1")],
        }
        answer = await post("/chat/completions", after_tool)
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert "tool_calls" not in answer["choices"][0]["message"]
    auto = await post("/chat/completions", {**CHAT, "tools": [CHAT_TOOL], "tool_choice": "auto"})
    assert "tool_calls" not in auto["choices"][0]["message"]


async def test_required_tool_choice_calls_each_tool_once_then_answers_text() -> None:
    """With `required`, after a tool result the next uncalled tool is called, then text follows."""
    final = {"type": "function", "function": {"name": "final_result", "parameters": WEATHER}}
    doc = {**CHAT, "tools": [CHAT_TOOL, final], "tool_choice": "required"}
    first = await post("/chat/completions", doc)
    assert first["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    turns = [*CHAT["messages"], *tool_turn("get_weather", "call_1")]
    second = await post("/chat/completions", {**doc, "messages": turns})
    assert second["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "final_result"
    turns += tool_turn("final_result", "call_2")
    third = await post("/chat/completions", {**doc, "messages": turns})
    assert third["choices"][0]["finish_reason"] == "stop"
    responses_doc = {
        **RESPONSES,
        "tools": [RESPONSES_TOOL, {**RESPONSES_TOOL, "name": "final_result"}],
        "tool_choice": "required",
        "input": [
            {"role": "user", "content": "Hi"},
            {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "22C"},
        ],
    }
    then = await post("/responses", responses_doc)
    assert then["output"][0]["name"] == "final_result"


async def test_chat_logprobs_spell_the_content() -> None:
    """logprobs tokens join to the content; each has top_logprobs entries, the token first."""
    doc = await post("/chat/completions", CHAT_CASES["n-logprobs"])
    assert len(doc["choices"]) == 2
    tokens = doc["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == doc["choices"][0]["message"]["content"]
    assert all(len(t["top_logprobs"]) == 3 for t in tokens)
    assert all(t["top_logprobs"][0]["token"] == t["token"] for t in tokens)
    assert all(bytes(t["bytes"]).decode() == t["token"] for t in tokens)
    plain = await post("/chat/completions", CHAT)
    assert plain["choices"][0]["logprobs"] is None


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        ({**CHAT, "tool_choice": "required"}, "tool_choice"),
        (
            {**CHAT, "tools": [CHAT_TOOL], "tool_choice": {"type": "function", "function": {}}},
            "tool_choice",
        ),
        ({**CHAT, "n": 0}, "n"),
        ({**CHAT, "top_logprobs": 2}, "top_logprobs"),
        ({**CHAT, "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "e", "input": "a", "dimensions": 0}, "dimensions"),
    ],
)
async def test_invalid_requests_get_openai_shaped_400s(doc: dict[str, Any], param: str) -> None:
    """A request OpenAI would refuse gets a 400 invalid_request_error naming the parameter."""
    path = "/embeddings" if "input" in doc else "/chat/completions"
    status, body = await send("POST", path, doc)
    assert status == 400
    assert orjson.loads(body)["error"]["param"] == param
    assert orjson.loads(body)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("case", RESPONSES_CASES)
async def test_responses_match_openai_schema(case: str) -> None:
    """Every Response, and every event of its stream, is valid per OpenAI's schema."""
    response = await post("/responses", RESPONSES_CASES[case])
    assert_valid("Response", response)
    _, body = await send("POST", "/responses", {**RESPONSES_CASES[case], "stream": True})
    for event in events(body):
        assert_valid("ResponseStreamEvent", event)


@pytest.mark.parametrize("case", RESPONSES_CASES)
async def test_responses_stream_is_the_full_event_sequence(case: str) -> None:
    """A stream opens, adds the item and its part, streams deltas, closes each, then completes."""
    whole = await post("/responses", RESPONSES_CASES[case])
    _, body = await send("POST", "/responses", {**RESPONSES_CASES[case], "stream": True})
    stream = events(body)
    kinds = [e["type"] for e in stream]
    item = whole["output"][0]
    if item["type"] == "message":
        middle = ["response.content_part.added"]
        middle += ["response.output_text.delta"] * (len(kinds) - 8)
        middle += ["response.output_text.done", "response.content_part.done"]
        text = item["content"][0]["text"]
        deltas = [e for e in stream if e["type"] == "response.output_text.delta"]
        assert "".join(e["delta"] for e in deltas) == text
        assert all(e["content_index"] == 0 for e in stream if "content_index" in e)
        logprobs = [lp for e in deltas for lp in e["logprobs"]]
        assert [lp["token"] for lp in logprobs] == [
            lp["token"] for lp in item["content"][0]["logprobs"]
        ]
    else:
        middle = ["response.function_call_arguments.delta"] * (len(kinds) - 6)
        middle += ["response.function_call_arguments.done"]
        deltas = [e for e in stream if e["type"] == "response.function_call_arguments.delta"]
        assert "".join(e["delta"] for e in deltas) == item["arguments"]
        Draft202012Validator(WEATHER).validate(orjson.loads(item["arguments"]))
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *middle,
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in stream] == list(range(len(stream)))
    assert all(e["item_id"] == item["id"] for e in stream if "item_id" in e)
    assert all(e["output_index"] == 0 for e in stream if "output_index" in e)
    assert stream[0]["response"]["status"] == "in_progress"
    assert stream[0]["response"]["usage"] is None
    assert stream[0]["response"]["output"] == []
    assert stream[-2]["item"] == item
    assert stream[-1]["response"] == whole


async def test_responses_structured_output_and_tool_choice() -> None:
    """text.format json_schema gets valid JSON; a function_call_output turns the mock to text."""
    response = await post("/responses", RESPONSES_CASES["json-schema"])
    text = response["output"][0]["content"][0]["text"]
    Draft202012Validator(SCHEMA_FORMAT["schema"]).validate(orjson.loads(text))
    called = await post("/responses", RESPONSES_CASES["tool-required"])
    assert called["output"][0]["type"] == "function_call"
    assert called["output"][0]["call_id"].startswith("call_")
    assert called["tools"][0]["strict"] is True
    answered = await post(
        "/responses",
        {
            **RESPONSES_CASES["tool-required"],
            "input": [
                {"role": "user", "content": "Hi"},
                {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "22C"},
            ],
        },
    )
    assert answered["output"][0]["type"] == "message"


async def test_responses_answer_reflects_the_prompt() -> None:
    """The Responses answer quotes the instructions and the user, with usage counted."""
    response = await post("/responses", RESPONSES)
    assert response["output"][0]["content"][0]["text"] == (
        "Hello! Instructions: You help Acme. You said: Hi"
    )
    assert response["usage"]["total_tokens"] == (
        response["usage"]["input_tokens"] + response["usage"]["output_tokens"]
    )


@pytest.mark.parametrize(
    "raw",
    ["hello world", ["a", "b", "c"], [1, 2, 3], [[1, 2], [3]]],
    ids=["string", "strings", "tokens", "token-arrays"],
)
async def test_embeddings_are_deterministic_unit_vectors(raw: Any) -> None:
    """One unit vector per input, valid per OpenAI's schema, the same each time."""
    doc = {"model": "text-embedding-3-small", "input": raw, "dimensions": 64}
    first = await post("/embeddings", doc)
    assert_valid("CreateEmbeddingResponse", first)
    assert first == await post("/embeddings", doc)
    expected = 1 if isinstance(raw, str) or isinstance(raw[0], int) else len(raw)
    assert [d["index"] for d in first["data"]] == list(range(expected))
    for item in first["data"]:
        assert len(item["embedding"]) == 64
        assert math.isclose(sum(v * v for v in item["embedding"]), 1.0, rel_tol=1e-5)
    assert first["usage"]["prompt_tokens"] == first["usage"]["total_tokens"] > 0


async def test_embeddings_base64_is_little_endian_float32() -> None:
    """base64 embeddings decode, as little-endian float32, to exactly the float answer."""
    doc = {"model": "text-embedding-3-large", "input": ["a", "b"]}
    floats = await post("/embeddings", doc)
    encoded = await post("/embeddings", {**doc, "encoding_format": "base64"})
    assert_valid("CreateEmbeddingResponse", floats)
    assert len(floats["data"][0]["embedding"]) == 3072
    for plain, packed in zip(floats["data"], encoded["data"], strict=True):
        raw = base64.b64decode(packed["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == plain["embedding"]
    assert floats["data"][0]["embedding"] != floats["data"][1]["embedding"]


async def test_models_list_retrieve_and_unknown_paths() -> None:
    """/models lists the mock's model, /models/{id} answers any id, anything else is a 404."""
    _, listed = await send("GET", "/models")
    assert_valid("ListModelsResponse", orjson.loads(listed))
    assert orjson.loads(listed)["data"][0]["id"] == "mock-model"
    _, one = await send("GET", "/models/ft%3Agpt-4o%3Aacme")
    assert_valid("Model", orjson.loads(one))
    assert orjson.loads(one)["id"] == "ft:gpt-4o:acme"
    for method, path in (("POST", "/audio/speech"), ("GET", "/models/a/b"), ("GET", "/chat")):
        status, body = await send(method, path, {})
        assert status == 404
        assert orjson.loads(body)["error"]["type"] == "invalid_request_error"
    status, _ = await send("POST", "/chat/completions", None)
    assert status == 400


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        *(("/chat/completions", {**c, "stream": True}) for c in CHAT_CASES.values()),
        *(("/responses", {**c, "stream": True}) for c in RESPONSES_CASES.values()),
        ("/embeddings", {"model": "e", "input": "x", "encoding_format": "base64"}),
    ],
)
async def test_same_request_same_bytes(path: str, doc: dict[str, Any]) -> None:
    """The mock reads no clock and draws no random numbers: a repeated request repeats the bytes."""
    assert await send("POST", path, doc) == await send("POST", path, doc)


def test_schema_validation_reports_what_is_wrong() -> None:
    """The schema check itself catches a missing required field (the check is not vacuous)."""
    errors = schema_errors(
        "OutputTextContent", {"type": "output_text", "text": "", "annotations": []}
    )
    assert errors == [": 'logprobs' is a required property"]


DEFS = {
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                "parent": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
            },
            "required": ["name", "children", "parent"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/Node",
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "short string": {"type": "string", "maxLength": 5},
    "long string": {"type": "string", "minLength": 200},
    "formats": {
        "type": "object",
        "properties": {
            f: {"type": "string", "format": f} for f in ("date-time", "date", "email", "uuid")
        },
        "required": ["date-time", "date", "email", "uuid"],
    },
    "pattern": {"type": "string", "pattern": "^[0-9]+$"},
    "integer bounds": {"type": "integer", "minimum": 3, "maximum": 9},
    "exclusive": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5},
    "negative": {"type": "integer", "exclusiveMaximum": -2},
    "multiple": {"type": "integer", "minimum": 7, "multipleOf": 5},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
    "nullable list": {"type": ["string", "null"]},
    "enum": {"enum": ["b", "a"]},
    "const": {"const": {"x": 1}},
    "array bounds": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 4},
    "tuple": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
    "oneOf": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "anyOf nullable": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
    "allOf": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
        ]
    },
    "definitions": {
        "definitions": {"Color": {"enum": ["red", "green"]}},
        "type": "object",
        "properties": {"color": {"$ref": "#/definitions/Color"}},
        "required": ["color"],
    },
    "recursive": DEFS,
    "map": {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 0},
    "empty": {},
    "no type object": {"properties": {"a": {"type": "integer"}}, "required": ["a"]},
}


@pytest.mark.parametrize("name", SCHEMAS)
@pytest.mark.parametrize("strict", [False, True])
def test_schema_instances_validate(name: str, strict: bool) -> None:
    """The instance generator's output validates against each kind of schema it supports."""
    schema = SCHEMAS[name]
    value = instance(schema, "Hello! You said: hi", strict=strict)
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(value)
    assert value == instance(schema, "Hello! You said: hi", strict=strict)


def test_schema_instances_fill_properties_as_strict_asks() -> None:
    """Without strict only required properties are filled; under strict, all of them."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
        "required": ["a"],
    }
    assert instance(schema, "words") == {"a": "words"}
    assert instance(schema, "words", strict=True) == {"a": "words", "b": 0}
