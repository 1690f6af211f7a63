"""The proxy end to end: the official openai SDK -> the gateway -> a real fake provider."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.core.experiments import in_treatment
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.prompts import PromptRegistry
from gateway.settings import load
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore
from tests.api.conftest import MakeGateway
from tests.conftest import RedisServer
from tests.servers import FakeProvider, ServedGateway

KEY = "sk-test-client-key-1234"
VARIABLES = {"company": "Acme", "timezone": "UTC", "tools": "search"}


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


def test_unmanaged_call_is_forwarded_byte_for_byte(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """A request with no prompt reference reaches the provider with its body unchanged."""
    body = b'{"model": "gpt-4o-mini",  "messages": [{"role": "user", "content": "hi"}], "x": 1}'
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    assert response.status_code == 200
    assert provider.last().body == body
    assert provider.last().headers["authorization"] == f"Bearer {KEY}"
    assert response.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert response.headers["x-request-id"].startswith("req_")
    assert float(response.headers["x-gateway-overhead-ms"]) >= 0
    assert response.headers["x-upstream-request-id"] == "req_upstream_1"
    assert len(response.headers.get_list("date")) == 1
    assert len(response.headers.get_list("server")) == 1
    assert "x-prompt-name" not in response.headers


def test_managed_prompt_from_the_body_is_rendered_and_injected(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """`extra_body={"prompt": ...}` renders the active version and sends its parameters."""
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="anything",
        messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": "Hi"}],
        temperature=1.5,
        extra_body={"prompt": {"id": "support-agent", "variables": VARIABLES}},
    )
    sent = provider.last().json()
    assert "prompt" not in sent
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4o-mini", 0.2, 512)
    assert [m["role"] for m in sent["messages"]] == ["system", "assistant", "user"]
    assert sent["messages"][0]["content"].startswith("You are the support agent of Acme.")
    assert "Tools you may use: search." in sent["messages"][0]["content"]
    assert sent["messages"][2] == {"role": "user", "content": "Hi"}
    assert (
        raw.headers["x-prompt-name"],
        raw.headers["x-prompt-version"],
        raw.headers["x-prompt-variant"],
    ) == ("support-agent", "1.1.0", "none")
    assert raw.parse().choices[0].message.content == "echo: Hi"


@pytest.mark.parametrize(
    ("how", "expected_version"),
    [
        ("litellm", "1.1.0"),
        ("headers", "1.0.0"),
        ("model-alias", "1.0.0"),
        ("body-pinned", "1.0.0"),
        ("name-alias", "1.1.0"),
    ],
)
def test_every_way_to_reference_a_prompt(
    gateway: ServedGateway, provider: FakeProvider, how: str, expected_version: str
) -> None:
    """LiteLLM fields, X-Prompt-* headers, the model alias and a pinned body version all work."""
    kwargs: dict[str, object] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Q"}]}
    c = client(gateway)
    if how == "litellm":
        kwargs["extra_body"] = {"prompt_id": "support-agent", "prompt_variables": VARIABLES}
    elif how == "headers":
        c = client(
            gateway,
            default_headers={
                "X-Prompt-Name": "support-agent",
                "X-Prompt-Version": "1.0.0",
                "X-Prompt-Variables": orjson.dumps(VARIABLES).decode(),
            },
        )
    elif how == "model-alias":
        kwargs["model"] = "prompt:support-agent@1.0.0"
        kwargs["extra_body"] = {"prompt_variables": VARIABLES}
    elif how == "body-pinned":
        kwargs["extra_body"] = {
            "prompt": {"id": "support-agent", "version": "1.0.0", "variables": VARIABLES}
        }
    else:
        kwargs["extra_body"] = {"prompt": {"name": "support-agent", "variables": VARIABLES}}
    raw = c.chat.completions.with_raw_response.create(**kwargs)  # type: ignore[call-overload]
    sent = provider.last().json()
    assert raw.headers["x-prompt-version"] == expected_version
    assert sent["model"] == "gpt-4o-mini"
    assert not {"prompt", "prompt_id", "prompt_version", "prompt_variables"} & set(sent)
    assert not any(h.startswith("x-prompt") for h in provider.last().headers)
    assert "Acme" in sent["messages"][0]["content"]


async def test_managed_stream_hides_the_usage_it_asked_for(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """A managed stream asks the provider for usage, and the client never sees it."""
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            extra_body={"prompt": {"id": "support-agent", "variables": VARIABLES}},
        )
        assert raw.headers["x-prompt-version"] == "1.1.0"
        chunks = [chunk async for chunk in raw.parse()]
    assert provider.last().json()["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from the fake provider"
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_unmanaged_stream_is_what_the_provider_would_have_sent(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """The client gets the provider's events minus the usage it did not ask for."""
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}'
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    ) as response:
        text = response.read().decode()
    assert provider.last().body == body[:-1] + b',"stream_options":{"include_usage":true}}'
    assert '"usage"' not in text
    assert text.count("data: ") == 7 and text.endswith("data: [DONE]\n\n")


def test_stream_that_asks_for_usage_gets_it(gateway: ServedGateway, provider: FakeProvider) -> None:
    """A client that asked for the usage chunk gets it, and its body is forwarded untouched."""
    chunks = list(
        client(gateway).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 16
    assert provider.last().json()["stream_options"] == {"include_usage": True}


def test_responses_api_with_the_native_prompt_parameter(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """client.responses.create(prompt=...) renders the prompt's system message into instructions."""
    response = client(gateway).responses.with_raw_response.create(
        model="gpt-4o",
        input="What are your hours?",
        instructions="be terse",
        prompt={
            "id": "support-agent",
            "version": "1.0.0",
            "variables": {"company": "Acme", "timezone": {"type": "input_text", "text": "CET"}},
        },
    )
    sent = provider.last().json()
    assert provider.last().path == "/v1/responses"
    assert "prompt" not in sent and "be terse" not in sent["instructions"]
    assert (sent["model"], sent["max_output_tokens"]) == ("gpt-4o-mini", 512)
    assert "timezone is CET" in sent["instructions"]
    assert sent["input"] == "What are your hours?"
    assert response.headers["x-prompt-version"] == "1.0.0"
    assert response.headers["x-prompt-replaced-system"] == "1"
    assert response.parse().output_text == "fake answer"


def test_openai_hosted_prompt_ids_pass_through(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """An unknown pmpt_ id on /v1/responses goes to the provider untouched."""
    body = b'{"model":"gpt-4o","prompt":{"id":"pmpt_abc123","version":"2"},"input":"hi"}'
    response = httpx.post(
        gateway.url + "/v1/responses", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert provider.last().body == body


def test_other_paths_are_proxied(gateway: ServedGateway, provider: FakeProvider) -> None:
    """Models, embeddings and unknown paths go through unchanged, query strings included."""
    c = client(gateway)
    assert [m.id for m in c.models.list()] == ["gpt-4o-mini"]
    assert (provider.last().method, provider.last().path) == ("GET", "/v1/models")
    embedding = c.embeddings.create(model="text-embedding-3-small", input="hello")
    assert embedding.data[0].embedding == [0.1, 0.2, 0.3]
    response = httpx.delete(gateway.url + "/v1/files/file-1?purge=true")
    assert response.status_code == 404
    assert (provider.last().method, provider.last().path, provider.last().query) == (
        "DELETE",
        "/v1/files/file-1",
        "purge=true",
    )
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "says"),
    [
        ("GET", "/console-typo", 404, "not_found", "Unknown path /console-typo. The gateway"),
        ("GET", "/%zz", 404, "not_found", "Unknown path"),
        ("TRACE", "/", 404, "not_found", "Unknown path /."),
        ("POST", "/healthz", 405, "method_not_allowed", "POST is not allowed on /healthz."),
        ("DELETE", "/metrics", 405, "method_not_allowed", "DELETE is not allowed on /metrics."),
        ("GET", "/v1/feedback", 405, "method_not_allowed", "GET is not allowed on /v1/feedback"),
    ],
)
def test_errors_outside_the_proxy_have_the_openai_shape(
    gateway: ServedGateway, method: str, path: str, status: int, code: str, says: str
) -> None:
    """Unknown paths and wrong methods outside /v1 are OpenAI-shaped and say what exists."""
    response = httpx.request(method, gateway.url + path)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert error["message"].startswith(says), error["message"]


class _BrokenUpstream:
    """An Upstream with a bug: every send raises something no layer expects."""

    async def send(self, *_: object) -> NoReturn:
        raise RuntimeError("a bug in the upstream layer")

    async def close(self) -> None:
        pass


def test_a_bug_inside_the_proxy_is_an_openai_error_logged_and_counted(
    provider: FakeProvider, tmp_path: Path
) -> None:
    """An unexpected exception on the request path is a 500 in OpenAI's shape carrying the
    request id, logged with that id and its traceback, and counted in the metrics; the message
    holds no internals beyond the exception's type."""
    settings = load(None, {"GATEWAY_UPSTREAM_URL": provider.url})
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = logged.append  # type: ignore[method-assign]
    logging.getLogger("gateway").addHandler(handler)
    served = ServedGateway(
        create_app(settings, store=SQLiteStore(tmp_path / "gateway.db"), upstream=_BrokenUpstream())
    )
    try:
        response = httpx.post(
            served.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}
        )
        assert response.status_code == 500
        request_id = response.headers["x-request-id"]
        error = response.json()["error"]
        assert error["code"] == "internal_error" and error["type"] == "server_error"
        assert request_id in error["message"] and "a bug in" not in error["message"]
        record = next(r for r in logged if request_id in r.getMessage())
        assert record.exc_info is not None and "a bug in the upstream layer" in str(
            record.exc_info[1]
        )
        metrics = httpx.get(served.url + "/metrics").text
        assert 'status="500"' in metrics
    finally:
        logging.getLogger("gateway").removeHandler(handler)
        served.stop()


def test_missing_variables_is_a_bad_request(gateway: ServedGateway) -> None:
    """The SDK raises BadRequestError with the contract's code and message."""
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"prompt": {"id": "support-agent", "variables": {"company": "Acme"}}},
        )
    assert caught.value.code == "missing_prompt_variables"
    assert caught.value.body["message"] == (  # type: ignore[index]
        "Missing variables for prompt support-agent@1.1.0: timezone, tools"
    )
    assert caught.value.response.headers["x-request-id"]


def test_unknown_prompt_is_not_found(gateway: ServedGateway) -> None:
    """An unknown prompt name is a NotFoundError with code prompt_not_found."""
    with pytest.raises(openai.NotFoundError) as caught:
        client(gateway).chat.completions.create(
            model="gpt-4o", messages=[], extra_body={"prompt": {"id": "nope"}}
        )
    assert caught.value.code == "prompt_not_found"


def test_structured_variables_are_refused(gateway: ServedGateway) -> None:
    """An object as a variable value is 400 invalid_prompt_variables."""
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(
            model="gpt-4o",
            messages=[],
            extra_body={
                "prompt": {"id": "support-agent", "variables": {**VARIABLES, "tools": ["a"]}}
            },
        )
    assert caught.value.code == "invalid_prompt_variables"


def test_model_alias_of_a_prompt_without_a_model_is_refused(gateway: ServedGateway) -> None:
    """`prompt:x` for a version with no model cannot be served, and says why."""
    with pytest.raises(openai.BadRequestError, match="names no model"):
        client(gateway).chat.completions.create(model="prompt:no-model", messages=[])


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_malformed_json_is_a_bad_request(gateway: ServedGateway, body: bytes) -> None:
    """A body that is not a JSON object is 400 invalid_json in OpenAI's shape."""
    response = httpx.post(gateway.url + "/v1/chat/completions", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert response.headers["x-request-id"]


def test_body_over_the_limit_is_413(make_gateway: MakeGateway) -> None:
    """A body over server.max_body_bytes is refused with 413 before anything is forwarded."""
    small = make_gateway("server: {max_body_bytes: 1000}\n")
    with pytest.raises(openai.APIStatusError) as caught:
        client(small).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x" * 2000}]
        )
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"


def test_provider_errors_pass_through_unchanged(gateway: ServedGateway) -> None:
    """A 429 with retry-after reaches the SDK as RateLimitError, headers and body intact."""
    with pytest.raises(openai.RateLimitError) as caught:
        client(gateway).chat.completions.create(model="error-429", messages=[])
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError) as failed:
        client(gateway).chat.completions.create(model="error-500", messages=[])
    assert failed.value.status_code == 500


def test_unreachable_provider_is_502_naming_it_without_the_key(make_gateway: MakeGateway) -> None:
    """A provider that refuses connections gives 502 upstream_unreachable; the key stays secret."""
    dead = make_gateway(
        "providers:\n  primary:\n    base_url: http://127.0.0.1:9/v1\n"
        "    api_key: sk-provider-secret-999\n",
        GATEWAY_UPSTREAM_URL="",
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client(dead).chat.completions.create(model="gpt-4o", messages=[])
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"
    assert "primary" in caught.value.message and "127.0.0.1" in caught.value.message
    assert "sk-provider-secret-999" not in caught.value.response.text


def test_slow_provider_is_504(make_gateway: MakeGateway) -> None:
    """A provider slower than upstream.read_timeout gives 504 upstream_timeout."""
    impatient = make_gateway("upstream: {read_timeout: 0.3}\n")
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client(impatient).chat.completions.create(model="slow", messages=[])
    assert caught.value.status_code == 504 and caught.value.code == "upstream_timeout"
    assert "upstream.read_timeout (0.3 s)" in caught.value.message
    assert time.monotonic() - started < 1.5


def test_a_provider_past_the_total_deadline_is_cut(
    make_gateway: MakeGateway, provider: FakeProvider
) -> None:
    """upstream.total_timeout bounds a whole call: a provider that answers slowly gets 504 naming
    that key, and one that keeps a stream alive with a byte every 50 ms (read_timeout never
    trips) is cut mid-stream, and its connection closed, once the deadline passes."""
    hurried = make_gateway("upstream: {read_timeout: 10, total_timeout: 0.5}\n")
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client(hurried).chat.completions.create(model="slow", messages=[])
    assert caught.value.status_code == 504 and caught.value.code == "upstream_timeout"
    assert "upstream.total_timeout (0.5 s)" in caught.value.message
    assert time.monotonic() - started < 1.5
    provider.hang.closed.clear()
    started = time.monotonic()
    stream = client(hurried).chat.completions.create(model="hang-stream", messages=[], stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert time.monotonic() - started < 2
    assert provider.hang.closed.wait(5), "the provider's stream was never closed"


def test_provider_key_replaces_the_clients(
    make_gateway: MakeGateway, provider: FakeProvider
) -> None:
    """A provider with its own key sends that key; the client's never reaches it."""
    keyed = make_gateway(
        f"providers:\n  fake:\n    base_url: {provider.url}\n    api_key: sk-provider-key\n"
        "routes:\n  - {model: 'gpt-*', provider: fake}\n",
        GATEWAY_UPSTREAM_URL="",
    )
    client(keyed).chat.completions.create(model="gpt-4o", messages=[])
    assert provider.last().headers["authorization"] == "Bearer sk-provider-key"
    with pytest.raises(openai.NotFoundError) as caught:
        client(keyed).chat.completions.create(model="claude-3", messages=[])
    assert caught.value.code == "model_not_found"


def test_client_hanging_up_mid_stream_releases_the_provider(
    gateway: ServedGateway, provider: FakeProvider
) -> None:
    """When the client leaves mid-stream the provider's connection is closed promptly."""
    body = b'{"model":"hang-stream","messages":[],"stream":true}'
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", content=body) as response:
        first = next(response.iter_bytes())
        assert b"first" in first
        assert provider.hang.started.is_set()
    assert provider.hang.closed.wait(5), "the provider's stream was never closed"


def test_experiment_assigns_by_the_user_key(gateway: ServedGateway, provider: FakeProvider) -> None:
    """During an experiment X-User-Id picks the variant by the bucket formula, every time."""
    for user in ("user-1", "user-2", "user-3", "alice"):
        expected = "treatment" if in_treatment(user, "ab-test", 0.5) else "control"
        for _ in range(2):
            raw = client(
                gateway, default_headers={"X-User-Id": user}
            ).chat.completions.with_raw_response.create(
                model="gpt-4o",
                messages=[],
                extra_body={"prompt": {"id": "ab-prompt", "variables": {"company": "A"}}},
            )
            assert raw.headers["x-prompt-variant"] == expected
            assert raw.headers["x-prompt-experiment"] == "ab-test"
            version = "2.0.0" if expected == "treatment" else "1.0.0"
            assert raw.headers["x-prompt-version"] == version
            assert "x-user-id" not in provider.last().headers


def test_a_non_ascii_user_key_lands_in_one_bucket_however_it_is_sent(
    gateway: ServedGateway,
) -> None:
    """X-User-Id's bytes are read as UTF-8, as the body's `user` is: the same user gets the same
    variant, the one the bucket formula gives (read as latin-1, these landed in the other arm)."""
    body = {
        "model": "gpt-4o",
        "messages": [],
        "prompt": {"id": "ab-prompt", "variables": {"company": "A"}},
    }
    for user in ("🙂", "Ünïcödé-ü", "ñ" * 100, "日本語ユーザー"):
        expected = "treatment" if in_treatment(user, "ab-test", 0.5) else "control"
        by_header = httpx.post(
            gateway.url + "/v1/chat/completions",
            json=body,
            headers={"X-User-Id": user.encode()},
        )
        by_body = httpx.post(gateway.url + "/v1/chat/completions", json={**body, "user": user})
        assert by_header.status_code == by_body.status_code == 200
        assert by_header.headers["x-prompt-variant"] == expected, user
        assert by_body.headers["x-prompt-variant"] == expected, user


def test_override_wins(make_gateway: MakeGateway) -> None:
    """PROMPT_OVERRIDES for the process serves the named version."""
    overridden = make_gateway(PROMPT_OVERRIDES='{"support-agent": "1.0.0"}')
    raw = client(overridden).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[],
        extra_body={"prompt": {"id": "support-agent", "variables": VARIABLES}},
    )
    assert raw.headers["x-prompt-version"] == "1.0.0"


def test_health_and_readiness(gateway: ServedGateway) -> None:
    """/healthz answers at once; /readyz says the store is reachable and prompts are loaded."""
    health = httpx.get(gateway.url + "/healthz")
    assert health.json() == {"status": "ok"}
    assert health.headers["x-request-id"].startswith("req_")
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["prompts"] >= 4


def test_readyz_is_503_while_the_store_is_unreachable(
    provider: FakeProvider, tmp_path: Path
) -> None:
    """A gateway whose store is down (and no snapshot file) starts, says so on /readyz, and
    serves unmanaged calls."""
    settings = load(
        None,
        {"GATEWAY_UPSTREAM_URL": provider.url, "GATEWAY_SNAPSHOT_PATH": str(tmp_path / "s.json")},
    )
    served = ServedGateway(create_app(settings, store=RedisStore("redis://127.0.0.1:1/0")))
    try:
        ready = httpx.get(served.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["store"] == "unreachable"
        plain = httpx.post(
            served.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}
        )
        assert plain.status_code == 200
    finally:
        served.stop()


def test_readyz_is_degraded_not_503_when_the_store_goes_away(
    provider: FakeProvider, tmp_path: Path
) -> None:
    """Once a snapshot serves, a store outage makes /readyz 200 degraded (PRODUCT §6), and
    managed calls keep being served from the snapshot."""
    binary = shutil.which("redis-server")
    assert binary is not None
    server = RedisServer(binary)
    asyncio.run(_push_greeter(server.url))
    settings = load(
        None,
        {"GATEWAY_UPSTREAM_URL": provider.url, "GATEWAY_SNAPSHOT_PATH": str(tmp_path / "s.json")},
    )
    served = ServedGateway(create_app(settings, store=RedisStore(server.url)))
    try:
        assert httpx.get(served.url + "/readyz").json()["status"] == "ready"
        server.stop()
        deadline = time.monotonic() + 10
        while (body := httpx.get(served.url + "/readyz")).json()["store"] != "unreachable":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert body.status_code == 200 and body.json()["status"] == "degraded"
        assert isinstance(body.json()["revision"], int) and body.json()["revision"] > 0
        managed = httpx.post(
            served.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [], "prompt": {"id": "greeter"}},
        )
        assert managed.status_code == 200 and managed.headers["x-prompt-name"] == "greeter"
    finally:
        served.stop()


def test_an_override_pointing_nowhere_degrades_readiness_until_the_version_exists(
    provider: FakeProvider, tmp_path: Path
) -> None:
    """PROMPT_OVERRIDES naming a missing version is checked against every snapshot: logged as
    an error, /readyz 200 `degraded` naming it, and each call's 404 says the override points
    nowhere; once the version is pushed the gateway is `ready` and serves it."""
    path = tmp_path / "gateway.db"
    asyncio.run(_push_greeter_to(SQLiteStore(path)))
    settings = load(
        None, {"GATEWAY_UPSTREAM_URL": provider.url, "PROMPT_OVERRIDES": '{"greeter": "2.0.0"}'}
    )
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = logged.append  # type: ignore[method-assign]
    logging.getLogger("gateway").addHandler(handler)
    served = ServedGateway(create_app(settings, store=SQLiteStore(path)))
    try:
        ready = httpx.get(served.url + "/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["store"] == "ok"
        assert ready.json()["dangling_overrides"] == [
            "PROMPT_OVERRIDES sets prompt 'greeter' to '2.0.0'; no such version (known: 1.0.0)"
        ]
        assert any("override points nowhere" in r.getMessage() for r in logged)
        call = {"model": "gpt-4o-mini", "messages": [], "prompt": {"id": "greeter"}}
        missing = httpx.post(served.url + "/v1/chat/completions", json=call)
        assert missing.status_code == 404
        assert "PROMPT_OVERRIDES" in missing.json()["error"]["message"]
        assert "points nowhere" in missing.json()["error"]["message"]
        asyncio.run(_push_greeter_to(SQLiteStore(path), "2.0.0"))
        deadline = time.monotonic() + 10
        while httpx.get(served.url + "/readyz").json()["status"] != "ready":
            assert time.monotonic() < deadline, "the override was never found again"
            time.sleep(0.05)
        served_call = httpx.post(served.url + "/v1/chat/completions", json=call)
        assert served_call.status_code == 200
        assert served_call.headers["x-prompt-version"] == "2.0.0"
    finally:
        logging.getLogger("gateway").removeHandler(handler)
        served.stop()


async def _push_greeter_to(store: SQLiteStore, version: str = "1.0.0") -> None:
    registry = PromptRegistry(store, threshold=0.9)
    await registry.create_version(
        make_draft(
            name="greeter", version=version, messages=[Message("system", "Hi.")], model="gpt-4o"
        ),
        actor="t",
    )
    await store.close()


async def _push_greeter(url: str) -> None:
    store = RedisStore(url)
    registry = PromptRegistry(store, threshold=0.9)
    await registry.create_version(
        make_draft(
            name="greeter",
            version="1.0.0",
            messages=[Message("system", "Hi.")],
            model="gpt-4o-mini",
        ),
        actor="t",
    )
    await registry.promote("greeter", "1.0.0", actor="t", force=True)
    await store.close()
