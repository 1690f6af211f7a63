"""The gateway's use case: prepare a call (parse once, resolve, render, inject) and forward it.

`prepare` is synchronous and reads only the in-memory snapshot: the request path never waits on
the store. The body is parsed once with orjson; a request that references no managed prompt is
forwarded with its bytes untouched (a stream that did not ask for usage gets one field spliced in).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from gateway.core.chat import (
    PromptHeaders,
    PromptRef,
    find_prompt_ref,
    find_user_key,
    inject_chat,
    inject_responses,
    wants_usage,
)
from gateway.core.model import RegistrySnapshot
from gateway.core.rendering import coerce_variables, render
from gateway.core.resolution import Resolved, resolve
from gateway.errors import InvalidBody, InvalidPromptVariables
from gateway.settings import Settings
from gateway.upstream.base import HOP_BY_HOP, Upstream, UpstreamResponse
from gateway.upstream.routing import Provider, Router

CHAT = "/chat/completions"
RESPONSES = "/responses"
HOSTED_PROMPT_PREFIX = "pmpt_"
_USAGE_SPLICE = b',"stream_options":{"include_usage":true}}'
# Request headers the provider never sees: the connection's own, and the gateway's instructions.
_DROP = HOP_BY_HOP | {b"accept-encoding", b"x-user-id"}


class SnapshotSource(Protocol):
    """Where the current registry snapshot is read from (a plain attribute, never awaited)."""

    current: RegistrySnapshot


@dataclass(slots=True)
class Call:
    """One proxied call: what goes upstream, and what the response headers and telemetry need."""

    request_id: str
    method: str
    path: str
    """The path under /v1, with its query string: `/chat/completions?x=1`."""
    operation: str
    """`chat`, `responses`, or `proxy` for every other path."""
    provider: Provider
    body: bytes | None
    headers: list[tuple[str, str]]
    started: float
    stream: bool = False
    strip_usage: bool = False
    model: str | None = None
    request: Mapping[str, Any] | None = None
    """The parsed body as sent upstream (None when not JSON)."""
    resolved: Resolved | None = None
    user_key: str | None = None
    upstream_wait: float = 0.0
    """Seconds spent waiting on the provider so far."""

    def overhead_ms(self) -> float:
        """Time spent in the gateway itself, excluding the wait for the provider."""
        return (time.perf_counter() - self.started - self.upstream_wait) * 1000


class GatewayService:
    """Prepares and forwards proxied calls."""

    def __init__(
        self,
        settings: Settings,
        snapshots: SnapshotSource,
        upstream: Upstream,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._snapshots = snapshots
        self._upstream = upstream
        self._router = Router(settings.routes)
        self._clock = clock

    def prepare(
        self,
        method: str,
        path: str,
        raw_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        request_id: str,
        started: float,
    ) -> Call:
        """Parse, resolve, render and inject; raise a GatewayError for the client when invalid."""
        route = path.split("?", 1)[0]
        operation = "chat" if route == CHAT else "responses" if route == RESPONSES else "proxy"
        headers: list[tuple[str, str]] = []
        wanted: dict[bytes, str] = {}
        for name, value in raw_headers:
            if name.startswith(b"x-prompt-") or name == b"x-user-id":
                wanted[name] = value.decode("latin-1")
            if name not in _DROP and not name.startswith(b"x-prompt-"):
                headers.append((name.decode("latin-1"), value.decode("latin-1")))
        doc = self._parse(body, required=operation != "proxy" and method == "POST")
        call = Call(
            request_id,
            method,
            path,
            operation,
            self._router.default,
            body or None,
            headers,
            started,
        )
        if doc is None:
            return self._finish(call)
        call.request = doc
        call.model = doc.get("model") if isinstance(doc.get("model"), str) else None
        call.stream = doc.get("stream") is True
        if operation == "proxy":
            return self._finish(call)

        ref = find_prompt_ref(doc, _prompt_headers(wanted))
        snapshot = self._snapshots.current
        if ref is not None and not (
            operation == "responses"
            and ref.name.startswith(HOSTED_PROMPT_PREFIX)
            and ref.name not in snapshot.prompts
        ):
            self._inject(call, doc, ref, snapshot, wanted.get(b"x-user-id"))
        elif operation == "chat" and call.stream and not wants_usage(doc):
            # Unmanaged: the body stays as the client wrote it, with the usage request added.
            call.strip_usage = True
            call.body = _splice_usage(body, doc)
        return self._finish(call)

    def _inject(
        self,
        call: Call,
        doc: Mapping[str, Any],
        ref: PromptRef,
        snapshot: RegistrySnapshot,
        user_header: str | None,
    ) -> None:
        call.user_key = find_user_key(doc, user_header)
        resolved = resolve(
            snapshot,
            ref.name,
            environment=self._settings.env,
            pinned=ref.version,
            overrides=self._settings.overrides,
            user_key=call.user_key,
            request_id=call.request_id,
            now=self._clock(),
        )
        version = resolved.version
        rendered = render(version.template, coerce_variables(ref.variables), version.label)
        if call.operation == "chat":
            out = inject_chat(doc, rendered, version)
            if call.stream and not wants_usage(doc):
                call.strip_usage = True
                out["stream_options"] = {**(out.get("stream_options") or {}), "include_usage": True}
        else:
            out = inject_responses(doc, rendered, version)
        call.resolved = resolved
        call.request = out
        call.model = out.get("model") if isinstance(out.get("model"), str) else None
        call.body = orjson.dumps(out)

    def _finish(self, call: Call) -> Call:
        call.provider = self._router.provider_for(call.model)
        if call.provider.api_key is not None:
            call.headers = [(n, v) for n, v in call.headers if n != "authorization"]
            call.headers.append(("authorization", f"Bearer {call.provider.api_key}"))
        # Identity keeps the bytes readable for usage accounting; the client link may compress.
        call.headers.append(("accept-encoding", "identity"))
        return call

    @staticmethod
    def _parse(body: bytes, *, required: bool) -> dict[str, Any] | None:
        if not body:
            if required:
                raise InvalidBody("The request body is empty; send a JSON object.")
            return None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if not required:
                return None  # not ours to judge: the provider answers for its own paths
            raise InvalidBody(
                f"We could not parse the JSON body of your request ({exc}). "
                "Send a JSON object with Content-Type: application/json."
            ) from None
        if not isinstance(doc, dict):
            if not required:
                return None
            raise InvalidBody("The request body must be a JSON object.")
        return doc

    async def open(self, call: Call) -> UpstreamResponse:
        """Send the call; the time until the provider's headers counts as upstream wait."""
        sent = time.perf_counter()
        try:
            return await self._upstream.send(
                call.provider, call.method, call.path, call.headers, call.body
            )
        finally:
            call.upstream_wait += time.perf_counter() - sent


def _prompt_headers(wanted: Mapping[bytes, str]) -> PromptHeaders:
    name = wanted.get(b"x-prompt-name") or wanted.get(b"x-prompt-id")
    raw = wanted.get(b"x-prompt-variables")
    variables = None
    if raw:
        try:
            variables = orjson.loads(raw)
        except orjson.JSONDecodeError:
            variables = None
        if not isinstance(variables, dict):
            raise InvalidPromptVariables(
                'X-Prompt-Variables must be a JSON object, e.g. {"company": "Acme"}.',
                param="X-Prompt-Variables",
            )
    return PromptHeaders(name, wanted.get(b"x-prompt-version"), variables)


def _splice_usage(body: bytes, doc: Mapping[str, Any]) -> bytes:
    """Add stream_options.include_usage, keeping every other byte of the client's body."""
    if "stream_options" in doc:
        options = doc["stream_options"] if isinstance(doc["stream_options"], Mapping) else {}
        return orjson.dumps({**doc, "stream_options": {**options, "include_usage": True}})
    end = body.rstrip()
    return end[:-1] + _USAGE_SPLICE


def new_request_id(incoming: str | None) -> str:
    """The client's X-Request-Id when it is sane, else a fresh one."""
    if incoming and len(incoming) <= 128 and incoming.isascii() and incoming.isprintable():
        return incoming
    return "req_" + uuid.uuid4().hex
