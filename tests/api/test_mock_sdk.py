"""The mock provider through a real gateway, driven by the official openai SDK and its helpers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from enum import StrEnum
from typing import Literal

import openai
import orjson
import pytest
from pydantic import BaseModel

from tests.api.conftest import MakeGateway

MODEL = "gpt-4o-mini"
FACT = "Ada Lovelace wrote the first program."
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "You extract facts. Answer in JSON."},
    {"role": "user", "content": FACT},
]


class Kind(StrEnum):
    PERSON = "person"
    PLACE = "place"


class Fact(BaseModel):
    subject: str
    kind: Kind
    year: int | None
    tags: list[str]


class Extraction(BaseModel):
    facts: list[Fact]
    confidence: float
    verdict: Literal["true", "false"]
    note: str | None


class GetWeather(BaseModel):
    """Look up the weather in a city."""

    city: str
    unit: Literal["c", "f"]
    days: int


@pytest.fixture(scope="module")
def sdk(make_gateway: MakeGateway) -> Iterator[openai.OpenAI]:
    """An SDK client talking to a gateway whose only provider is the built-in mock."""
    gateway = make_gateway(GATEWAY_UPSTREAM_URL="mock")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-mock", max_retries=0)
    yield client
    client.close()


def test_chat_parse_returns_the_pydantic_object(sdk: openai.OpenAI) -> None:
    """`chat.completions.parse` with a Pydantic response_format gets a parsed, valid object."""
    completion = sdk.chat.completions.parse(
        model=MODEL, messages=MESSAGES, response_format=Extraction
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, Extraction)
    assert completion.choices[0].finish_reason == "stop"
    assert message.parsed.facts and "Ada Lovelace" in message.parsed.facts[0].subject
    assert Extraction.model_validate_json(message.content or "") == message.parsed


def test_chat_stream_helper_parses_the_final_completion(sdk: openai.OpenAI) -> None:
    """`chat.completions.stream` yields content deltas and a parsed final completion."""
    with sdk.chat.completions.stream(
        model=MODEL, messages=MESSAGES, response_format=Extraction
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1
    assert "".join(deltas) == final.choices[0].message.content
    assert isinstance(final.choices[0].message.parsed, Extraction)


def test_chat_json_object_answers_a_json_object(sdk: openai.OpenAI) -> None:
    """`response_format: json_object` gets a JSON object holding the reply."""
    completion = sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format={"type": "json_object"}
    )
    answer = orjson.loads(completion.choices[0].message.content or "")
    assert answer == {"answer": "Hello! Instructions: You extract facts. You said: " + FACT}


def test_chat_required_tool_call_has_parsed_arguments(sdk: openai.OpenAI) -> None:
    """With a strict Pydantic tool and tool_choice required, the SDK parses the call's arguments."""
    completion = sdk.chat.completions.parse(
        model=MODEL,
        messages=MESSAGES,
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.id.startswith("call_")
    assert call.type == "function"
    assert call.function.name == "GetWeather"
    assert isinstance(call.function.parsed_arguments, GetWeather)

    followed = sdk.chat.completions.create(
        model=MODEL,
        messages=[
            *MESSAGES,
            choice.message.model_dump(include={"role", "content", "tool_calls"}),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C."},
        ],
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
    )
    assert followed.choices[0].finish_reason == "stop"
    assert followed.choices[0].message.content


def test_chat_named_tool_call_streams_into_the_helper(sdk: openai.OpenAI) -> None:
    """A named tool_choice streams a tool call the stream helper assembles and parses."""
    with sdk.chat.completions.stream(
        model=MODEL,
        messages=MESSAGES,
        tools=[openai.pydantic_function_tool(GetWeather, name="weather")],
        tool_choice={"type": "function", "function": {"name": "weather"}},
    ) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in kinds
    call = (final.choices[0].message.tool_calls or [])[0]
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert final.choices[0].finish_reason == "tool_calls"


def test_chat_auto_tool_choice_answers_text(sdk: openai.OpenAI) -> None:
    """With tool_choice auto the mock answers text and calls no tool."""
    completion = sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[openai.pydantic_function_tool(GetWeather)]
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content


def test_chat_n_and_logprobs(sdk: openai.OpenAI) -> None:
    """`n` gives that many choices; logprobs tokens spell the content, with top_logprobs each."""
    completion = sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, n=3, logprobs=True, top_logprobs=2
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    for choice in completion.choices:
        tokens = (choice.logprobs and choice.logprobs.content) or []
        assert "".join(t.token for t in tokens) == choice.message.content
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)


def test_responses_stream_helper_and_final_response(sdk: openai.OpenAI) -> None:
    """`responses.stream` walks the whole event sequence and gives the final response."""
    with sdk.responses.stream(model=MODEL, input="Hi there", instructions="Be brief.") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.output_text.delta" in kinds
    assert final.status == "completed"
    assert final.output_text == "Hello! Instructions: Be brief. You said: Hi there"
    assert final.usage is not None and final.usage.total_tokens > 0


def test_responses_parse_with_text_format(sdk: openai.OpenAI) -> None:
    """`responses.parse(text_format=...)` gets a parsed Pydantic object."""
    response = sdk.responses.parse(model=MODEL, input="Ada wrote code.", text_format=Extraction)
    assert isinstance(response.output_parsed, Extraction)


def test_responses_stream_with_text_format(sdk: openai.OpenAI) -> None:
    """`responses.stream(text_format=...)` parses the streamed JSON in the final response."""
    with sdk.responses.stream(model=MODEL, input="Ada", text_format=Extraction) as stream:
        done = [e for e in stream if e.type == "response.output_text.done"]
        final = stream.get_final_response()
    assert isinstance(done[0].parsed, Extraction)
    assert isinstance(final.output_parsed, Extraction)


def test_responses_required_function_call(sdk: openai.OpenAI) -> None:
    """A function tool with tool_choice required gives a function_call whose arguments validate."""
    tool: openai.types.responses.FunctionToolParam = {
        "type": "function",
        "name": "get_weather",
        "parameters": {**GetWeather.model_json_schema(), "additionalProperties": False},
        "strict": True,
    }
    with sdk.responses.stream(
        model=MODEL, input="Weather?", tools=[tool], tool_choice="required"
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather"
    GetWeather.model_validate_json(call.arguments)


def test_embeddings_float_and_base64_agree(sdk: openai.OpenAI) -> None:
    """Embeddings are deterministic unit vectors; base64, the SDK default, decodes to the floats."""
    floats = sdk.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    decoded = sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [d.embedding for d in floats.data] == [d.embedding for d in decoded.data]
    assert len(floats.data[0].embedding) == 1536
    assert math.isclose(sum(v * v for v in floats.data[0].embedding), 1.0, rel_tol=1e-5)
    assert floats.data[0].embedding != floats.data[1].embedding
    short = sdk.embeddings.create(model="text-embedding-3-small", input="a", dimensions=8)
    assert len(short.data[0].embedding) == 8
    assert short.usage.prompt_tokens == 1


def test_models_list_and_retrieve(sdk: openai.OpenAI) -> None:
    """`models.list` lists the mock's model and `models.retrieve` answers any model id."""
    assert [m.id for m in sdk.models.list()] == ["mock-model"]
    retrieved = sdk.models.retrieve("gpt-4o-mini")
    assert retrieved.id == "gpt-4o-mini"
    assert retrieved.object == "model"
