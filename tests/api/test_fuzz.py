"""Hostile input, generated: no body, header or path a client sends makes the gateway answer 5xx,
and every 4xx it answers has OpenAI's error shape (PRODUCT §6).

Hypothesis builds requests around the OpenAI shapes of /v1/chat/completions and /v1/responses
(managed-prompt references, variables, streaming flags, user keys, each field any JSON type),
raw bodies that are not JSON at all, and any path and method under /v1. The provider is the echo
fake, which answers 5xx only for the models kept out of the generated ones, so a 5xx here is the
gateway's own. Examples are bounded (FUZZ_EXAMPLES, default 150 per test) to keep CI quick; set
the variable higher to hunt longer.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import ServedGateway

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("FUZZ_RANDOM") is None,  # the same examples on every CI run
)
PROMPTS = ("support-agent", "ab-prompt", "keep-agent", "logo-prompt", "reasoning-agent", "quirky")
"""Prompts in the test registry (tests/api/conftest.py), so many calls are managed ones."""
FAKE_BEHAVIOURS = ("error-", "slow", "hang-stream", "no-usage")
"""Models the fake provider treats specially (5xx, waits): never generated."""

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # orjson's range; beyond: raw below
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
models = (
    st.sampled_from(["gpt-4o-mini", "o3-mini", "prompt:support-agent", "prompt:"])
    | st.text(max_size=30)
).filter(lambda m: not any(m.startswith(b) for b in FAKE_BEHAVIOURS))
names = st.sampled_from(PROMPTS) | st.text(max_size=20)
variables = st.dictionaries(
    st.sampled_from(["company", "timezone", "tools", "logo", "x"]) | st.text(max_size=10),
    json_values,
    max_size=5,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool"]) | st.text(max_size=8)
content = (
    st.text(max_size=60)
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "input_text", "image_url"]) | st.text(max_size=8)},
            optional={"text": json_values, "image_url": json_values},
        ),
        max_size=3,
    )
    | json_values
)
messages = st.lists(
    st.fixed_dictionaries({"role": roles}, optional={"content": content, "name": json_values})
    | json_values,
    max_size=4,
)
prompt_refs = (
    st.fixed_dictionaries(
        {},
        optional={
            "id": names | json_values,
            "name": names,
            "version": st.sampled_from(["1.0.0", "1.1.0", "9.9.9"]) | json_values,
            "variables": variables | json_values,
        },
    )
    | json_values
)


def _optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


chat_bodies = st.fixed_dictionaries(
    {"model": models | json_values, "messages": messages | json_values},
    optional={
        "prompt": prompt_refs,
        "prompt_id": names | json_values,
        "prompt_variables": variables | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": _optional({"include_usage": st.booleans() | json_values}) | json_values,
        "user": st.text(max_size=20) | json_values,
        "metadata": _optional({"user_id": st.text(max_size=20) | json_values}) | json_values,
        "temperature": json_values,
        "max_tokens": json_values,
        "max_completion_tokens": json_values,
        "n": json_values,
    },
)
responses_bodies = st.fixed_dictionaries(
    {"model": models | json_values},
    optional={
        "input": st.text(max_size=40) | messages | json_values,
        "instructions": st.text(max_size=40) | json_values,
        "prompt": prompt_refs,
        "stream": st.booleans() | json_values,
        "previous_response_id": st.text(max_size=12) | json_values,
        "conversation": json_values,
        "max_output_tokens": json_values,
        "safety_identifier": st.text(max_size=12) | json_values,
    },
)
FIELD_BYTES = [b for b in range(256) if b == 9 or 0x20 <= b <= 0x7E or b >= 0x80]
"""What RFC 9110 allows in a header value (VCHAR, obs-text, SP, HTAB); malformed HTTP itself is
the server's to refuse (tests/api/test_server_limits.py), and clients cannot send it."""
header_values = st.lists(st.sampled_from(FIELD_BYTES), max_size=60).map(bytes).map(bytes.strip)
prompt_headers = _optional(
    {
        "x-prompt-name": st.sampled_from(PROMPTS).map(str.encode) | header_values,
        "x-prompt-version": st.sampled_from([b"1.0.0", b"2.0.0"]) | header_values,
        "x-prompt-variables": variables.map(orjson.dumps) | header_values,
        "x-user-id": header_values,
        "traceparent": st.just(b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01") | header_values,
        "content-type": st.sampled_from(
            [b"application/json", b"text/plain", b"multipart/form-data"]
        )
        | header_values,
    }
)


@pytest.fixture(scope="module")
def http(gateway: ServedGateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def check(response: httpx.Response) -> None:
    """No 5xx from the gateway; every 4xx in OpenAI's error shape."""
    body = response.read()
    assert response.status_code < 500, (response.status_code, body[:500])
    if response.status_code >= 400:
        doc = orjson.loads(body)
        error = doc["error"]
        assert set(error) >= {"message", "type", "param", "code"}, doc
        assert isinstance(error["message"], str) and error["message"], doc
        assert isinstance(error["type"], str), doc


def send(http: httpx.Client, path: str, body: bytes, headers: dict[str, bytes]) -> None:
    with http.stream("POST", path, content=body, headers=headers) as response:
        check(response)


@FUZZ
@given(body=chat_bodies, headers=prompt_headers)
def test_chat_completions_never_5xx(
    http: httpx.Client, body: dict[str, Any], headers: dict[str, bytes]
) -> None:
    send(http, "/v1/chat/completions", orjson.dumps(body), headers)


@FUZZ
@given(body=responses_bodies, headers=prompt_headers)
def test_responses_never_5xx(
    http: httpx.Client, body: dict[str, Any], headers: dict[str, bytes]
) -> None:
    send(http, "/v1/responses", orjson.dumps(body), headers)


@FUZZ
@given(
    path=st.sampled_from(["/v1/chat/completions", "/v1/responses", "/v1/feedback"]),
    body=st.binary(max_size=200)
    | json_values.map(orjson.dumps)
    | st.sampled_from([b'{"model": 1e400}', b'{"n": 123456789012345678901234567890}', b"\xff\xfe"])
    | st.integers(1, 400).map(lambda depth: b"[" * depth + b"]" * depth)
    | st.integers(1, 400).map(lambda depth: b'{"messages":' + b"[" * depth + b"]" * depth + b"}"),
    headers=prompt_headers,
)
def test_bodies_that_are_not_requests_never_5xx(
    http: httpx.Client, path: str, body: bytes, headers: dict[str, bytes]
) -> None:
    send(http, path, body, headers)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
    path=st.lists(
        st.text(st.characters(codec="utf-8", exclude_characters="?#"), max_size=12)
        | st.sampled_from(["..", ".", "%2e%2e", "%2F", "%00", "%5c", "models", "files"]),
        max_size=4,
    ).map(lambda parts: "/v1/" + "/".join(parts)),
)
def test_any_path_and_method_never_5xx(http: httpx.Client, method: str, path: str) -> None:
    try:
        request = http.build_request(method, path)
    except (httpx.InvalidURL, UnicodeError):
        return  # not something a client library can send
    response = http.send(request, stream=True)
    try:
        if method == "HEAD":
            assert response.status_code < 500
        else:
            check(response)
    finally:
        response.close()
