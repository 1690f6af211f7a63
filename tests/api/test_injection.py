"""Injection end to end (PRODUCT §5): the gateway rewrites nothing the client did not ask for.

The official openai SDK -> a real gateway -> the fake provider, which records every request.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import openai
import orjson
import pytest

from tests.api.conftest import MakeGateway
from tests.servers import FakeProvider, OtlpReceiver, ServedGateway

KEY = "sk-test-client-key-1234"
VARIABLES = {"company": "Acme", "timezone": "UTC", "tools": "search"}
IMAGE_URL = "https://example.com/logo.png"

_open: list[openai.OpenAI] = []


def client(gateway: ServedGateway, **kwargs: object) -> openai.OpenAI:
    """An SDK client pointed at the gateway, closed after the test."""
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, **kwargs)  # type: ignore[arg-type]
    _open.append(sdk)
    return sdk


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def chat(gateway: ServedGateway, prompt: dict[str, Any], **kwargs: Any) -> Any:
    """A managed chat completion with the raw response (for headers); user message "Hi"."""
    kwargs.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o", extra_body={"prompt": prompt}, **kwargs
    )


# ---- parameter spelling follows the model ------------------------------------------------------


def test_reasoning_model_gets_max_completion_tokens_and_no_temperature(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """An o3-mini version sends max_tokens as max_completion_tokens and leaves temperature out."""
    chat(gateway, {"id": "reasoning-agent", "variables": {"company": "Acme"}})
    sent = provider.last().json()
    assert (sent["model"], sent["max_completion_tokens"]) == ("o3-mini", 300)
    assert "max_tokens" not in sent and "temperature" not in sent


def test_reasoning_model_keeps_what_the_client_sent_itself(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """A client's own temperature and max_tokens spelling are its own: they are kept."""
    chat(
        gateway,
        {"id": "reasoning-agent", "variables": {"company": "Acme"}},
        temperature=1,
        max_tokens=50,
    )
    sent = provider.last().json()
    assert (sent["temperature"], sent["max_tokens"]) == (1, 300)
    assert "max_completion_tokens" not in sent


def test_responses_to_a_reasoning_model_get_no_temperature(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """On /v1/responses a reasoning model gets max_output_tokens and no version temperature."""
    client(gateway).responses.create(
        model="gpt-4o", input="Q", prompt={"id": "reasoning-agent", "variables": {"company": "A"}}
    )
    sent = provider.last().json()
    assert (sent["model"], sent["max_output_tokens"]) == ("o3-mini", 300)
    assert "temperature" not in sent


@pytest.mark.parametrize(
    ("version", "model", "reasoning"),
    [("1.0.0", "my-reasoner-1", True), ("1.1.0", "my-reasoner-2", False)],
)
def test_model_quirks_of_the_provider_the_versions_model_routes_to(
    make_gateway: MakeGateway, provider: FakeProvider, version: str, model: str, reasoning: bool
) -> None:
    """A provider's model_quirks.reasoning globs apply to the models routed to it, and only them."""
    gateway = make_gateway(
        "providers:\n"
        f"  quirky:\n    base_url: {provider.url}\n"
        "    model_quirks:\n      reasoning: ['my-reasoner*']\n"
        f"  plain:\n    base_url: {provider.url}\n"
        "routes:\n"
        "  - {model: my-reasoner-2, provider: plain}\n"
        "  - {model: '*', provider: quirky}\n",
        GATEWAY_UPSTREAM_URL="",
    )
    chat(gateway, {"id": "quirky", "version": version})
    sent = provider.last().json()
    assert sent["model"] == model
    if reasoning:
        assert sent["max_completion_tokens"] == 100 and "temperature" not in sent
    else:
        assert (sent["max_tokens"], sent["temperature"]) == (100, 0.5)


# ---- client system messages ---------------------------------------------------------------------

INSTRUCTOR_SYSTEM = {
    "role": "system",
    "content": "As a genius expert, respond only in JSON matching this schema: "
    '{"properties": {"name": {"type": "string"}}, "required": ["name"]}',
}


def test_client_system_message_survives_with_keep(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """Instructor's JSON mode: with client_system: keep its system message follows the prompt's."""
    raw = chat(
        gateway,
        {"id": "keep-agent", "variables": {"company": "Acme"}},
        messages=[INSTRUCTOR_SYSTEM, {"role": "user", "content": "Extract: Ann"}],
        response_format={"type": "json_object"},
    )
    sent = provider.last().json()
    assert sent["messages"] == [
        {"role": "system", "content": "You extract data for Acme."},
        INSTRUCTOR_SYSTEM,
        {"role": "user", "content": "Extract: Ann"},
    ]
    assert sent["response_format"] == {"type": "json_object"}
    assert raw.headers["x-prompt-replaced-system"] == "0"


@pytest.mark.parametrize("count", [0, 1, 2])
def test_replaced_system_messages_are_counted_in_a_header(
    gateway: ServedGateway, provider: FakeProvider, count: int
) -> None:
    """By default the client's system messages go; x-prompt-replaced-system says how many."""
    own = [{"role": "system", "content": "s"}, {"role": "developer", "content": "d"}][:count]
    raw = chat(
        gateway,
        {"id": "support-agent", "variables": VARIABLES},
        messages=[*own, {"role": "user", "content": "Hi"}],
    )
    assert raw.headers["x-prompt-replaced-system"] == str(count)
    roles = [m["role"] for m in provider.last().json()["messages"]]
    assert roles == ["system", "assistant", "user"]


def test_unmanaged_calls_have_no_replaced_system_header(gateway: ServedGateway) -> None:
    """Only managed calls carry x-prompt-replaced-system."""
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "system", "content": "s"}]
    )
    assert "x-prompt-replaced-system" not in raw.headers


def test_responses_keep_appends_the_clients_instructions(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """On /v1/responses with keep the client's instructions follow the prompt's."""
    raw = client(gateway).responses.with_raw_response.create(
        model="gpt-4o",
        instructions="Answer in JSON.",
        input=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Q"}],
        prompt={"id": "keep-agent", "variables": {"company": "Acme"}},
    )
    sent = provider.last().json()
    assert sent["instructions"] == "You extract data for Acme.\n\nAnswer in JSON."
    assert sent["input"][0] == {"role": "developer", "content": "Be brief."}
    assert raw.headers["x-prompt-replaced-system"] == "0"


# ---- Responses conversations -------------------------------------------------------------------


def test_a_three_turn_conversation_sees_the_prompt_once(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """Over three previous_response_id turns instructions are resent and nothing piles up."""
    sdk = client(gateway)
    prompt: Any = {"id": "support-agent", "variables": VARIABLES}
    before = len(provider.requests)
    previous = None
    for question in ("Hi", "What are your hours?", "Thanks"):
        extra = {"previous_response_id": previous} if previous else {}
        previous = sdk.responses.create(model="gpt-4o", input=question, prompt=prompt, **extra).id
    turns = [r.json() for r in provider.requests[before:]]
    assert len(turns) == 3
    instructions = {t["instructions"] for t in turns}
    assert len(instructions) == 1
    assert next(iter(instructions)).startswith("You are the support agent of Acme.")
    assert turns[0]["input"] == [
        {
            "role": "assistant",
            "content": "Hello! I'm the Acme support assistant. How can I help you today?",
        },
        {"role": "user", "content": "Hi"},
    ]
    assert [t["input"] for t in turns[1:]] == ["What are your hours?", "Thanks"]
    assert [t.get("previous_response_id") for t in turns] == [None, "resp_fake", "resp_fake"]


# ---- typed variables ---------------------------------------------------------------------------


def test_chat_image_variable_becomes_the_messages_content(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """An image_url part fills the message that is only its placeholder, as a one-part list."""
    part = {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "low"}}
    chat(gateway, {"id": "logo-prompt", "variables": {"company": "Acme", "logo": part}})
    assert provider.last().json()["messages"][:2] == [
        {"role": "system", "content": "Describe the logo of Acme."},
        {"role": "user", "content": [part]},
    ]


def test_responses_image_variable_becomes_an_input_item(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """On /v1/responses an input_image part fills its message, placed before the input."""
    part = {"type": "input_image", "image_url": IMAGE_URL, "detail": "auto"}
    client(gateway).responses.create(
        model="gpt-4o",
        input="What colour is it?",
        prompt={
            "id": "logo-prompt",
            "variables": {"company": {"type": "input_text", "text": "Acme"}, "logo": part},
        },
    )
    sent = provider.last().json()
    assert sent["instructions"] == "Describe the logo of Acme."
    assert sent["input"] == [
        {"role": "user", "content": [part]},
        {"role": "user", "content": "What colour is it?"},
    ]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (
            {"id": "support-agent", "variables": {**VARIABLES, "company": {"type": "image_url"}}},
            "'company' is a content part of type 'image_url' used inside running text",
        ),
        (
            {
                "id": "logo-prompt",
                "variables": {"company": "A", "logo": {"type": "input_image", "image_url": "x"}},
            },
            "'logo' is a content part of type 'input_image', which /v1/chat/completions",
        ),
    ],
)
def test_misplaced_or_foreign_parts_are_refused_naming_the_variable(
    gateway: ServedGateway, prompt: dict[str, Any], message: str
) -> None:
    """A part inside running text, or of the other API, is 400 invalid_prompt_variables."""
    with pytest.raises(openai.BadRequestError) as caught:
        chat(gateway, prompt)
    assert caught.value.code == "invalid_prompt_variables"
    assert message in str(caught.value)


def test_utf8_variables_header_renders_as_sent(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """X-Prompt-Variables sent as raw UTF-8 bytes (as curl and Python send them) renders intact."""
    url = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    try:
        connection.putrequest("POST", "/v1/chat/completions")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("X-Prompt-Name", "keep-agent")
        connection.putheader("X-Prompt-Variables", '{"company": "Café Zürich"}'.encode())
        body = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]})
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 200
    system = provider.last().json()["messages"][0]
    assert system == {"role": "system", "content": "You extract data for Café Zürich."}


# ---- telemetry ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver for this module's traced gateway."""
    sink = OtlpReceiver()
    yield sink
    sink.stop()


def test_span_says_how_many_system_messages_were_replaced(
    make_gateway: MakeGateway, receiver: OtlpReceiver
) -> None:
    """The span's gateway.prompt.replaced_system is the header's count, as an int."""
    traced = make_gateway(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="50")
    raw = chat(
        traced,
        {"id": "support-agent", "variables": VARIABLES},
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "Hi"}],
    )
    span = receiver.wait_for(raw.headers["x-request-id"])
    assert span.attributes["gateway.prompt.replaced_system"] == 1
