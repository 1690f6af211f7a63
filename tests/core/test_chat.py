"""Chat requests: finding the prompt reference, the user key, and injecting a rendered prompt."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.chat import (
    PromptHeaders,
    find_prompt_ref,
    find_user_key,
    inject_chat,
    inject_responses,
)
from gateway.core.rendering import Message
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


RENDERED = (Message("system", "You help Acme."),)


def test_chat_injection_replaces_system_messages_and_parameters() -> None:
    """Rendered messages come first; the request's system/developer ones go; parameters follow."""
    body = {
        "model": "gpt-4o",
        "temperature": 1.0,
        "max_tokens": 9,
        "user": "u1",
        "prompt": {"id": "x"},
        "prompt_variables": {},
        "messages": [
            {"role": "developer", "content": "d"},
            {"role": "user", "content": "q"},
            {"role": "system", "content": "s"},
            {"role": "assistant", "content": "a"},
        ],
    }
    out = inject_chat(body, RENDERED, version())
    assert out["messages"] == [
        {"role": "system", "content": "You help Acme."},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    assert (out["model"], out["temperature"], out["max_tokens"], out["user"]) == (
        "gpt-4o-mini",
        0.2,
        256,
        "u1",
    )
    assert "prompt" not in out and "prompt_variables" not in out
    assert body["model"] == "gpt-4o", "the input is not mutated"


def test_chat_injection_keeps_the_clients_max_tokens_spelling() -> None:
    """A request using max_completion_tokens gets the version's limit under that name."""
    out = inject_chat({"max_completion_tokens": 5, "messages": []}, RENDERED, version())
    assert out["max_completion_tokens"] == 256 and "max_tokens" not in out


def test_responses_injection_turns_input_into_items() -> None:
    """A string input becomes a user item after the rendered prompt; instructions go."""
    out = inject_responses(
        {"model": "x", "input": "hi", "instructions": "i", "prompt": {"id": "p"}},
        RENDERED,
        version(),
    )
    assert out["input"] == [
        {"role": "system", "content": "You help Acme."},
        {"role": "user", "content": "hi"},
    ]
    assert "instructions" not in out and "prompt" not in out
    assert out["max_output_tokens"] == 256
