"""Chat requests: finding the prompt reference, the user key, and injecting a rendered prompt."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.core.chat import (
    PromptHeaders,
    find_prompt_ref,
    find_user_key,
    inject_chat,
    inject_responses,
)
from gateway.core.rendering import RenderedMessage
from gateway.errors import InvalidPromptVariables, InvalidRequest
from tests.factories import version

NO_HEADERS = PromptHeaders()


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (
            {"prompt": {"id": "a", "version": "1.0.0", "variables": {"x": 1}}},
            NO_HEADERS,
            ("a", "1.0.0", {"x": 1}, "body"),
        ),
        ({"prompt": {"name": "a"}}, NO_HEADERS, ("a", None, {}, "body")),
        (
            {"prompt_id": "b", "prompt_version": "2.0.0", "prompt_variables": {"y": "z"}},
            NO_HEADERS,
            ("b", "2.0.0", {"y": "z"}, "litellm"),
        ),
        ({}, PromptHeaders("c", "3.0.0", {"k": "v"}), ("c", "3.0.0", {"k": "v"}, "header")),
        ({"model": "prompt:d@1.2.0"}, NO_HEADERS, ("d", "1.2.0", {}, "model")),
        (
            {"model": "prompt:d", "prompt_variables": {"q": "1"}},
            NO_HEADERS,
            ("d", None, {"q": "1"}, "model"),
        ),
        (
            {"model": "prompt:d"},
            PromptHeaders(variables={"h": "1"}),
            ("d", None, {"h": "1"}, "model"),
        ),
        # Precedence: body prompt, then LiteLLM, then headers, then the alias.
        (
            {"prompt": {"id": "a"}, "prompt_id": "b", "model": "prompt:d"},
            PromptHeaders("c"),
            ("a", None, {}, "body"),
        ),
        ({"prompt_id": "b", "model": "prompt:d"}, PromptHeaders("c"), ("b", None, {}, "litellm")),
        ({"model": "prompt:d"}, PromptHeaders("c"), ("c", None, {}, "header")),
    ],
)
def test_prompt_reference_is_found_in_contract_order(
    body: dict[str, Any], headers: PromptHeaders, expected: tuple[Any, ...]
) -> None:
    """The first present of body prompt, LiteLLM fields, headers and model alias wins."""
    ref = find_prompt_ref(body, headers)
    assert ref is not None
    assert (ref.name, ref.version, dict(ref.variables), ref.source) == expected


def test_no_reference_means_unmanaged() -> None:
    """A plain request references no prompt."""
    assert find_prompt_ref({"model": "gpt-4o", "messages": []}, NO_HEADERS) is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"prompt": {"version": "1.0.0"}}, InvalidRequest),
        ({"prompt": {"id": "a", "variables": ["x"]}}, InvalidPromptVariables),
        ({"prompt": 5}, InvalidRequest),
        ({"prompt_id": ""}, InvalidRequest),
        ({"model": "prompt:"}, InvalidRequest),
    ],
)
def test_malformed_references_are_refused(body: dict[str, Any], error: type[Exception]) -> None:
    """A reference that names nothing, or variables that are not an object, is a 400."""
    with pytest.raises(error):
        find_prompt_ref(body, NO_HEADERS)


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        ({"safety_identifier": "s", "user": "u", "metadata": {"user_id": "m"}}, "h", "h"),
        ({"safety_identifier": "s", "user": "u", "metadata": {"user_id": "m"}}, None, "s"),
        ({"user": "u", "metadata": {"user_id": "m"}}, None, "u"),
        ({"metadata": {"user_id": "m"}}, None, "m"),
        ({}, None, None),
    ],
)
def test_user_key_order(body: dict[str, Any], header: str | None, expected: str | None) -> None:
    """X-User-Id, then safety_identifier, user, metadata.user_id."""
    assert find_user_key(body, header) == expected


RENDERED = (RenderedMessage("system", "You help Acme."),)
KEEP = replace(version(), client_system="keep")
CLIENT_MESSAGES = [
    {"role": "developer", "content": "d"},
    {"role": "user", "content": "q"},
    {"role": "system", "content": "s"},
    {"role": "assistant", "content": "a"},
]


def test_chat_injection_replaces_system_messages_and_parameters() -> None:
    """Rendered messages come first; the request's system/developer ones go; parameters follow."""
    body = {
        "model": "gpt-4o",
        "temperature": 1.0,
        "max_tokens": 9,
        "user": "u1",
        "prompt": {"id": "x"},
        "prompt_variables": {},
        "messages": CLIENT_MESSAGES,
    }
    injected = inject_chat(body, RENDERED, version())
    out = injected.body
    assert out["messages"] == [
        {"role": "system", "content": "You help Acme."},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    assert injected.replaced_system == 2
    assert (out["model"], out["temperature"], out["max_tokens"], out["user"]) == (
        "gpt-4o-mini",
        0.2,
        256,
        "u1",
    )
    assert "prompt" not in out and "prompt_variables" not in out
    assert body["model"] == "gpt-4o", "the input is not mutated"


def test_chat_injection_with_keep_keeps_the_clients_system_messages_after_the_prompt() -> None:
    """With client_system: keep every request message follows the rendered ones, in order."""
    injected = inject_chat({"messages": CLIENT_MESSAGES}, RENDERED, KEEP)
    assert injected.body["messages"] == [
        {"role": "system", "content": "You help Acme."},
        *CLIENT_MESSAGES,
    ]
    assert injected.replaced_system == 0


@pytest.mark.parametrize(
    ("client", "reasoning", "field"),
    [
        ({}, False, "max_tokens"),
        ({}, True, "max_completion_tokens"),
        ({"max_completion_tokens": 5}, False, "max_completion_tokens"),
        ({"max_completion_tokens": 5}, True, "max_completion_tokens"),
        ({"max_tokens": 5}, True, "max_tokens"),
        ({"max_tokens": 5}, False, "max_tokens"),
    ],
)
def test_chat_max_tokens_spelling_follows_the_model_unless_the_client_chose_one(
    client: dict[str, Any], reasoning: bool, field: str
) -> None:
    """The version's limit goes under the client's spelling, else the one the model takes."""
    out = inject_chat({**client, "messages": []}, RENDERED, version(), reasoning=reasoning).body
    assert out[field] == 256
    assert {"max_tokens", "max_completion_tokens"} & set(out) == {field}


@pytest.mark.parametrize("inject", [inject_chat, inject_responses])
def test_reasoning_models_get_no_temperature_from_the_version(inject: Any) -> None:
    """A reasoning model gets no version temperature; a temperature the client sent stays."""
    assert "temperature" not in inject({"model": "x"}, RENDERED, version(), reasoning=True).body
    out = inject({"temperature": 1}, RENDERED, version(), reasoning=True).body
    assert out["temperature"] == 1


def test_chat_content_part_is_sent_as_a_list() -> None:
    """A message rendered to a content part is sent with a list as its content."""
    part = {"type": "image_url", "image_url": {"url": "https://x/logo.png"}}
    out = inject_chat({"messages": []}, (RenderedMessage("user", (part,)),), version()).body
    assert out["messages"] == [{"role": "user", "content": [part]}]


RESPONSES_RENDERED = (
    RenderedMessage("system", "You help Acme."),
    RenderedMessage("developer", "Be brief."),
    RenderedMessage("assistant", "Hello from Acme!"),
)


def test_responses_injection_puts_system_messages_into_instructions() -> None:
    """System/developer messages become instructions; the request's go and are counted."""
    injected = inject_responses(
        {"model": "x", "input": "hi", "instructions": "i", "prompt": {"id": "p"}},
        RENDERED,
        version(),
    )
    out = injected.body
    assert out["instructions"] == "You help Acme."
    assert out["input"] == "hi", "an input with nothing before it keeps its shape"
    assert "prompt" not in out and out["max_output_tokens"] == 256
    assert injected.replaced_system == 1


def test_responses_injection_puts_the_other_messages_before_the_first_turns_input() -> None:
    """Without previous_response_id the template's other messages lead the input."""
    injected = inject_responses(
        {"input": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
        RESPONSES_RENDERED,
        version(),
    )
    assert injected.body["instructions"] == "You help Acme.\n\nBe brief."
    assert injected.body["input"] == [
        {"role": "assistant", "content": "Hello from Acme!"},
        {"role": "user", "content": "q"},
    ]
    assert injected.replaced_system == 1


@pytest.mark.parametrize("own", ["next question", [{"role": "user", "content": "next question"}]])
@pytest.mark.parametrize(
    "continued",
    [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"}, {"conversation": {"id": "c"}}],
)
def test_responses_injection_adds_no_items_to_a_continued_conversation(
    own: Any, continued: dict[str, Any]
) -> None:
    """With previous_response_id or a conversation, only instructions are set; the input is
    left as it was."""
    out = inject_responses({**continued, "input": own}, RESPONSES_RENDERED, version()).body
    assert out["input"] == own
    assert out["instructions"] == "You help Acme.\n\nBe brief."


def test_responses_injection_with_keep_appends_the_clients_instructions() -> None:
    """With client_system: keep the client's instructions follow and its system items stay."""
    items = [{"role": "developer", "content": "Answer in JSON."}, {"role": "user", "content": "q"}]
    injected = inject_responses({"instructions": "Mine.", "input": items}, RENDERED, KEEP)
    assert injected.body["instructions"] == "You help Acme.\n\nMine."
    assert injected.body["input"] == items
    assert injected.replaced_system == 0


def test_responses_injection_without_system_messages_still_replaces_instructions() -> None:
    """A template with no system message still replaces the client's instructions by default."""
    rendered = (RenderedMessage("user", "Context."),)
    injected = inject_responses({"instructions": "Mine.", "input": "q"}, rendered, version())
    assert "instructions" not in injected.body
    assert injected.body["input"] == [
        {"role": "user", "content": "Context."},
        {"role": "user", "content": "q"},
    ]
    assert injected.replaced_system == 1
