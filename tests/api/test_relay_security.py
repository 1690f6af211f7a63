"""The upstream target comes from config only: paths, keys and hop-by-hop headers.

Requests are written on raw sockets (http.client), because HTTP client libraries normalise dot
segments before sending and would hide what a hostile client can send.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web

from tests.api.conftest import MakeGateway
from tests.servers import ScriptedProvider, ServedGateway

GATEWAY_KEY = "sk-gateway-held-key-0001"
CLIENT_KEY = "sk-client-own-key-0002"


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedProvider]:
    """A provider whose base URL has a path, /openai/v1, recording every path it is asked for."""
    server = ScriptedProvider(base_path="/openai/v1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed(make_gateway: MakeGateway, scripted: ScriptedProvider) -> ServedGateway:
    """A gateway that holds the provider's key."""
    return make_gateway(GATEWAY_UPSTREAM_URL=scripted.url, GATEWAY_UPSTREAM_API_KEY=GATEWAY_KEY)


def raw_request(
    gateway: ServedGateway,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send `target` exactly as written; return status, lower-cased headers and body."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


TRAVERSALS = [
    "/v1/../admin/keys",
    "/v1/%2e%2e/%2e%2e/internal/metrics",
    "/v1/%2E%2E/admin",
    "/v1/.%2e/admin",
    "/v1/models/../../admin",
    "/v1/./models",
    "/v1/%2e/models",
    "/v1/..;/admin",
    "/v1/files%2f..%2fadmin",
    "/v1/files%2F..%2Fadmin",
    "/v1/files%5c..%5cadmin",
    "/v1/files\\..\\admin",
    "/v1//admin",
    "/v1/models/",
    "/v1/models//x",
    "/v1/%252e%252e/admin",
    "/v1/files/%00",
    "/v1/files/%zz",
    "/v1/files/%ff",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_a_path_that_is_not_plain_segments_never_reaches_the_provider(
    keyed: ServedGateway, scripted: ScriptedProvider, target: str
) -> None:
    """Dot segments, encoded slashes or backslashes and empty segments are 400 invalid_path."""
    before = len(scripted.requests)
    status, headers, body = raw_request(
        keyed, "GET", target, {"authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert status == 400, body
    error = orjson.loads(body)["error"]
    assert error["code"] == "invalid_path"
    assert error["type"] == "invalid_request_error"
    assert headers["x-request-id"]
    assert len(scripted.requests) == before


@pytest.mark.parametrize(
    "target",
    [
        "/v1/models",
        "/v1/files/file-abc123/content",
        "/v1/vector_stores/vs_1/files?limit=2&order=desc",
        "/v1/models/ft:gpt-4o-mini:org:custom:id",
    ],
)
def test_plain_paths_go_under_the_configured_base_path(
    keyed: ServedGateway, scripted: ScriptedProvider, target: str
) -> None:
    """A plain path lands at the provider's base URL plus the path after /v1, as written."""
    status, _, _ = raw_request(keyed, "GET", target)
    assert status == 200
    path, _, query = target.removeprefix("/v1").partition("?")
    assert scripted.last().path == "/openai/v1" + path
    assert scripted.last().query == query


def test_a_base_url_without_a_path_keeps_host_and_port(make_gateway: MakeGateway) -> None:
    """With a base URL that has no path, requests still go to the configured host and port only."""
    server = ScriptedProvider(base_path="")
    try:
        gateway = make_gateway(
            GATEWAY_UPSTREAM_URL=server.url, GATEWAY_UPSTREAM_API_KEY=GATEWAY_KEY
        )
        assert raw_request(gateway, "GET", "/v1/models")[0] == 200
        assert server.last().path == "/models"
        assert raw_request(gateway, "GET", "/v1/../../etc/passwd")[0] == 400
        assert raw_request(gateway, "GET", "/v1@evil.example/x")[0] in (400, 404)
        assert [r.path for r in server.requests] == ["/models"]
    finally:
        server.stop()


def test_the_clients_key_is_not_forwarded_when_the_gateway_holds_one(
    keyed: ServedGateway, scripted: ScriptedProvider
) -> None:
    """Authorization, api-key, x-api-key and ?api_key= of the client are replaced or dropped."""
    status, _, _ = raw_request(
        keyed,
        "GET",
        f"/v1/models?api_key={CLIENT_KEY}&limit=5&key={CLIENT_KEY}&API_KEY={CLIENT_KEY}",
        {
            "authorization": f"Bearer {CLIENT_KEY}",
            "api-key": CLIENT_KEY,
            "x-api-key": CLIENT_KEY,
            "x-goog-api-key": CLIENT_KEY,
        },
    )
    assert status == 200
    seen = scripted.last()
    assert seen.headers["authorization"] == f"Bearer {GATEWAY_KEY}"
    assert CLIENT_KEY not in repr(seen.headers)
    assert seen.query == "limit=5"


def test_without_a_gateway_key_the_clients_key_passes_through(
    make_gateway: MakeGateway, scripted: ScriptedProvider
) -> None:
    """A provider with no key configured gets the client's own credentials, as sent."""
    gateway = make_gateway(GATEWAY_UPSTREAM_URL=scripted.url)
    raw_request(gateway, "GET", f"/v1/models?api_key={CLIENT_KEY}", {"api-key": CLIENT_KEY})
    assert scripted.last().headers["api-key"] == CLIENT_KEY
    assert scripted.last().query == f"api_key={CLIENT_KEY}"


@pytest.mark.parametrize(
    "headers",
    [
        {"connection": "keep-alive, X-Internal", "x-internal": "1"},
        {"connection": "X-Internal, x-other", "x-internal": "1", "x-other": "2"},
        {"keep-alive": "timeout=5", "proxy-connection": "keep-alive", "te": "trailers"},
        {"upgrade": "websocket", "connection": "upgrade"},
        {"proxy-authorization": "Basic c2VjcmV0"},
        {"trailer": "x-checksum"},
    ],
)
def test_hop_by_hop_request_headers_are_dropped(
    keyed: ServedGateway, scripted: ScriptedProvider, headers: dict[str, str]
) -> None:
    """Hop-by-hop headers and every header Connection names never reach the provider."""
    status, _, _ = raw_request(keyed, "GET", "/v1/models", {**headers, "x-kept": "yes"})
    assert status == 200
    seen = scripted.last().headers
    assert seen["x-kept"] == "yes"
    for name in headers:
        if name != "connection":
            assert name not in seen, name
    assert "x-internal" not in seen


def test_hop_by_hop_response_headers_are_dropped(
    keyed: ServedGateway, scripted: ScriptedProvider
) -> None:
    """Headers the provider's Connection names, and its Keep-Alive, never reach the client."""

    async def answer(request: web.Request, body: bytes) -> web.Response:
        return web.json_response(
            {"ok": True},
            headers={
                "connection": "keep-alive, X-Upstream-Secret",
                "x-upstream-secret": "internal-routing-token",
                "keep-alive": "timeout=99",
                "proxy-authenticate": "Basic",
                "x-ratelimit-remaining-requests": "42",
            },
        )

    scripted.handlers["/openai/v1/hop"] = answer
    status, headers, _ = raw_request(keyed, "GET", "/v1/hop")
    assert status == 200
    assert "x-upstream-secret" not in headers
    assert "proxy-authenticate" not in headers
    assert headers.get("keep-alive") != "timeout=99"
    assert headers["x-ratelimit-remaining-requests"] == "42"
