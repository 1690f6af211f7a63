"""The gateway's use case: prepare a call (parse once, resolve, render, inject) and forward it.

`prepare` is synchronous and reads only the in-memory snapshot: the request path never waits on
the store. The body is parsed once with orjson; a request that references no managed prompt is
forwarded with its bytes untouched (a stream that did not ask for usage gets one field spliced in).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import orjson

from gateway.core.adoption import (
    EMPTY_INDEX,
    AdoptionIndex,
    Match,
    build_index,
    is_adopted_version,
)
from gateway.core.capture import system_texts, without_system_text
from gateway.core.chat import (
    MODEL_ALIAS,
    PromptHeaders,
    PromptRef,
    find_prompt_ref,
    find_user_key,
    inject_chat,
    inject_responses,
    wants_usage,
)
from gateway.core.jsondepth import check_depth
from gateway.core.model import PromptVersion, RegistrySnapshot
from gateway.core.paths import upstream_path, without_key_parameters
from gateway.core.quirks import is_reasoning_model
from gateway.core.rendering import (
    Api,
    RenderedMessage,
    coerce_request_variables,
    render_request,
)
from gateway.core.resolution import Resolved, resolve
from gateway.core.sse import DeferredTap, Outcome
from gateway.errors import (
    ClientClosedRequest,
    GatewayError,
    InvalidBody,
    InvalidPromptVariables,
    MissingPromptVariables,
    ModelNotRouted,
    NotFound,
    StoreUnavailable,
)
from gateway.settings import Settings
from gateway.telemetry.attributes import (
    hash_user,
    invocation_parameters,
    provider_system,
    span_name,
)
from gateway.telemetry.events import (
    BatchObserver,
    CallRecord,
    Observer,
    PromptInfo,
    SpanHandle,
    Tracer,
)
from gateway.telemetry.tokens import TokenCounter
from gateway.upstream.base import (
    HOP_BY_HOP,
    Body,
    BufferedResponse,
    Upstream,
    UpstreamResponse,
    connection_options,
)
from gateway.upstream.routing import Provider, Router

log = logging.getLogger("gateway.service")

CHAT = "/chat/completions"
RESPONSES = "/responses"
HOSTED_PROMPT_PREFIX = "pmpt_"
_USAGE_SPLICE = b',"stream_options":{"include_usage":true}}'
# Request headers the provider never sees: the connection's own, the gateway's instructions, and
# Expect (the gateway has taken the body already, or streams it; a provider that never answers
# 100-continue must not hold the upload).
_DROP = HOP_BY_HOP | {b"accept-encoding", b"x-user-id", b"x-session-id", b"expect"}
_DROP_TRACED = _DROP | {b"traceparent", b"tracestate"}
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})
_WANTED = frozenset({b"x-user-id", b"x-session-id", b"traceparent", b"tracestate"})
SESSION_ID_MAX = 256
"""Characters of X-Session-Id kept for session.id."""
RENDERED_MAX = 4096
"""Renderings kept by `GatewayService._rendering` before the cache is emptied."""
# Where clients put a provider key: OpenAI's Authorization, Azure's api-key, Anthropic's and
# others' x-api-key, Google's x-goog-api-key.
_CLIENT_KEY_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})


class SnapshotSource(Protocol):
    """Where the current registry snapshot is read from (a plain attribute, never awaited)."""

    current: RegistrySnapshot
    loaded: bool
    """A snapshot was taken into service (from the store or the disk file). Until then
    `current` is an empty stand-in, which must not answer that a prompt does not exist."""


@dataclass(slots=True)
class Call:
    """One proxied call: what goes upstream, and what the response headers and telemetry need."""

    request_id: str
    method: str
    path: str
    """The path under /v1, with its query string: `/chat/completions?x=1`."""
    operation: str
    """`chat`, `responses`, or `proxy` for every other path."""
    route: str
    """The path without its query string: `/chat/completions`."""
    genai_operation: str | None
    """gen_ai.operation.name for the route: `chat`, `embeddings`, ... or None."""
    provider: Provider
    body: Body
    """What goes upstream: bytes (JSON, read whole) or the client's upload as it streams."""
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
    started_ns: int = 0
    """Wall-clock arrival, for the span's start."""
    variables: Mapping[str, object] | None = None
    span: SpanHandle | None = None
    first_chunk: float | None = None
    """perf_counter() when the first streamed chunk was forwarded."""
    disconnected: bool = False
    client_headers: Mapping[bytes, str] = field(default_factory=dict)
    """The X-Prompt-*, X-User-Id and trace context headers, kept for the gateway itself."""
    content_type: str = ""
    """The request's content-type as sent ("" when absent): a multipart boundary is
    case-sensitive (RFC 2046), so it is never lower-cased here."""
    content_length: int | None = None
    """The request's declared content-length (None when chunked or absent)."""
    finished: bool = False
    """The call's record was made; a call is recorded once."""
    outcome: Outcome | None = None
    """What a relayed answer said so far (for a call the client or the provider cut short)."""
    tap: DeferredTap | None = None
    """A streamed answer's tap, read in `settle` (or when the client leaves) into `outcome`."""
    status: int | None = None
    """The status sent to the client, once the answer started."""
    client_wait: float = 0.0
    """Seconds spent waiting for the client's request body."""
    replaced_system: int | None = None
    """On managed calls: how many of the client's system/developer messages the prompt replaced."""
    injected: bool = False
    """The body was rewritten with a rendered prompt (else it is the client's bytes, perhaps
    with the usage request spliced in)."""
    adopted: bool = False
    """Served as an adopted prompt: its system message matched an adopted template."""
    system_texts: tuple[tuple[str, str], ...] = ()
    """With adoption capture on, the system/developer texts of an unmanaged call."""

    def overhead_ms(self, now: float | None = None) -> float:
        """Time spent in the gateway itself until `now` (a `time.perf_counter()`, by default
        this moment), excluding the waits for the provider and for the client's request body."""
        end = time.perf_counter() if now is None else now
        return (end - self.started - self.upstream_wait - self.client_wait) * 1000


def read_stream(call: Call) -> None:
    """Read a streamed answer's tap into the call's outcome (`DeferredTap.read`). A bug in
    reading is logged, never raised: the call is recorded with what was read."""
    if call.tap is None:
        return
    try:
        call.tap.read()
    except Exception:
        log.exception("reading the stream of call %s failed", call.request_id)


SETTLE_DELAY = 0.01
"""Seconds a finished call waits, at most, for its record, span and observers (`settle`)."""
SETTLE_BATCH = 256
"""Finished calls that are settled at once, without waiting for SETTLE_DELAY."""
SETTLE_SLICE = 8
"""Finished calls settled per turn of the event loop, or a quarter of those waiting when that
is more. Between two slices the loop reads the sockets, so a request that arrives while the
calls of the last 10 ms are settled waits for one slice, not for all of them: at one
connection 0.20 against 0.71 ms (median; 0.42 against 1.06 ms p99), what the gateway added to
p99 there. Taking a quarter keeps what waits bounded (about four times what finishes per turn)
under any load. It costs about 8 µs of CPU per request and 16 per stream at load (each slice
runs its code cold again; benchmarks/README.md)."""

_Finished = tuple[Call, int, Outcome | None, GatewayError | None, float]
"""A finished call waiting for `settle`: the call, its status, outcome, error, and the moment."""


class GatewayService:
    """Prepares and forwards proxied calls."""

    def __init__(
        self,
        settings: Settings,
        snapshots: SnapshotSource,
        upstream: Upstream,
        *,
        tracer: Tracer | None = None,
        observers: Sequence[Observer] = (),
        batch_observers: Sequence[BatchObserver] = (),
        tokens: TokenCounter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._snapshots = snapshots
        self._upstream = upstream
        self._router = Router(settings.routes)
        self._tracer = tracer
        self._observers = tuple(observers)
        self._batch_observers = tuple(batch_observers)
        self._tokens = tokens or TokenCounter()
        self._capture = settings.telemetry.capture_content
        self._templates: dict[str, str] = {}
        self._clock = clock
        self._capture_prompts = settings.adoption.capture
        self._adoption_snapshot: RegistrySnapshot | None = None
        self._unfillable: set[str] = set()
        """Versions (labels) an adopted call could not be rendered with: logged once each."""
        self._adoption_index: AdoptionIndex = EMPTY_INDEX
        self._usage_refused: set[str] = set()
        """Providers that answered 400 to stream_options: never sent it again."""
        self._reasoning: dict[str, bool] = {}
        """Whether each model seen takes reasoning-model parameters, decided once."""
        self._rendered: dict[
            tuple[object, ...], tuple[Mapping[str, object], tuple[RenderedMessage, ...]]
        ] = {}
        """Recent renderings by version id, API and text values (see `_rendering`)."""
        self._finished: list[_Finished] = []
        """Calls finished since the last `settle`, in order."""
        self._settle_at: asyncio.Handle | None = None

    def arrive(
        self,
        method: str,
        path: str,
        raw_headers: Sequence[tuple[bytes, bytes]],
        *,
        request_id: str,
        started: float,
    ) -> Call:
        """Start a call: sort the client's headers into forwarded ones and the gateway's own."""
        route = path.split("?", 1)[0]
        operation = "chat" if route == CHAT else "responses" if route == RESPONSES else "proxy"
        headers: list[tuple[str, str]] = []
        wanted: dict[bytes, str] = {}
        # With tracing on, the gateway's span replaces the client's trace context upstream.
        drop = _DROP_TRACED if self._tracer is not None else _DROP
        connection = None
        content_type = ""
        length = None
        for name, value in raw_headers:
            if name.startswith(b"x-prompt-") or name in _WANTED:
                wanted[name] = value.decode("latin-1")
            elif name not in drop and not name.startswith(b"proxy-"):
                text = value.decode("latin-1")
                headers.append((name.decode("latin-1"), text))
                if name == b"content-type":
                    content_type = text
            elif name == b"connection":
                connection = value if connection is None else connection + b"," + value
            elif name == b"content-length":
                length = value
        if connection is not None and connection.lower() not in _PLAIN_CONNECTION:
            # Headers the client's Connection header names are hop-by-hop too (RFC 9110 §7.6.1).
            named = {n.decode("latin-1") for n in connection_options([(b"connection", connection)])}
            headers = [(n, v) for n, v in headers if n not in named]
        return Call(
            request_id,
            method,
            path,
            operation,
            route,
            GENAI_OPERATIONS.get(route),
            self._router.default,
            None,
            headers,
            started,
            started_ns=time.time_ns(),
            client_headers=wanted,
            content_type=content_type,
            content_length=int(length) if length is not None and length.isdigit() else None,
        )

    def prepare(self, call: Call, body: bytes) -> None:
        """Parse, resolve, render and inject; raise a GatewayError for the client when invalid.

        A path that could leave the provider's base path is refused first (InvalidPath), before
        anything is read from the body or sent anywhere.
        """
        upstream_path(call.route)
        call.body = body or None
        doc = self._parse(body, required=call.operation != "proxy" and call.method == "POST")
        if doc is not None:
            call.request = doc
            call.model = doc.get("model") if isinstance(doc.get("model"), str) else None
            call.stream = doc.get("stream") is True
            if call.operation != "proxy":
                self._manage(call, doc)
        self._route(call)
        request = call.request
        if (
            call.stream
            and call.operation == "chat"
            and request is not None
            and not wants_usage(request)
            and self._asks_usage(call.provider)
        ):
            # The body stays as the client (or the prompt) made it, with the usage request added.
            call.strip_usage = True
            call.body = _splice_usage(cast(bytes, call.body), request)

    def prepare_upload(self, call: Call, body: AsyncIterable[bytes], model: str | None) -> None:
        """Route a streamed upload (multipart or binary) by its `model` field; never parsed.

        Raises InvalidPath or ModelNotRouted like `prepare`.
        """
        upstream_path(call.route)
        call.body = body
        call.model = model
        self._route(call)
        if call.content_length is not None:
            # Forward the declared length, so a provider that needs one gets it, and one that
            # receives fewer bytes knows the upload is incomplete.
            call.headers.append(("content-length", str(call.content_length)))

    def _route(self, call: Call) -> None:
        """Pick the provider for the call's model and give it the provider's credentials."""
        call.provider = self._router.provider_for(call.model)
        if call.provider.api_key is not None:
            # The gateway's key replaces every spelling of the client's own.
            call.headers = [(n, v) for n, v in call.headers if n not in _CLIENT_KEY_HEADERS]
            call.headers.append(("authorization", f"Bearer {call.provider.api_key}"))
            route, _, query = call.path.partition("?")
            if query:
                query = without_key_parameters(query)
                call.path = f"{route}?{query}" if query else route
        # Identity keeps the bytes readable for usage accounting; the client link may compress.
        call.headers.append(("accept-encoding", "identity"))

    def _manage(self, call: Call, doc: dict[str, Any]) -> None:
        ref = find_prompt_ref(doc, _prompt_headers(call.client_headers))
        snapshot = self._snapshots.current
        if ref is not None:
            if not (
                call.operation == "responses"
                and ref.name.startswith(HOSTED_PROMPT_PREFIX)
                and ref.name not in snapshot.prompts
            ):
                if not self._snapshots.loaded:
                    raise _not_loaded(ref.name)
                self._inject(call, doc, ref, snapshot, _user_header(call))
            return
        index = self._adoptions(snapshot)
        if not index.size and not self._capture_prompts:
            return
        texts = system_texts(doc, call.operation)
        if not texts:
            return
        if index.size:
            for _, text in texts:
                match = index.match(text)
                if match is not None:
                    self._adopt(call, doc, match, text, snapshot)
                    return
        if self._capture_prompts:
            call.system_texts = texts

    def _adoptions(self, snapshot: RegistrySnapshot) -> AdoptionIndex:
        """The adopted templates of the snapshot served, indexed once per snapshot."""
        if snapshot is not self._adoption_snapshot:
            self._adoption_index = build_index(snapshot)
            self._adoption_snapshot = snapshot
        return self._adoption_index

    def _adopt(
        self,
        call: Call,
        doc: Mapping[str, Any],
        match: Match,
        text: str,
        snapshot: RegistrySnapshot,
    ) -> None:
        """Serve an unmanaged call whose system message matched an adopted template as a call
        of that prompt: resolved as any (override, experiment, environment), with the values
        read from its text. While the adopted version itself serves, the body is not touched;
        when nothing of the prompt is servable, the call goes out as the app sent it."""
        user_key = find_user_key(doc, _user_header(call))
        try:
            resolved = resolve(
                snapshot,
                match.template.name,
                environment=self._settings.env,
                overrides=self._settings.overrides,
                user_key=user_key,
                request_id=call.request_id,
                now=self._clock(),
            )
        except NotFound:
            return
        call.user_key = user_key
        if is_adopted_version(resolved.version, match.template):
            call.adopted = True
            call.resolved = resolved
            call.variables = match.values
            call.replaced_system = 0
            return
        try:
            # Only the message the prompt was adopted from is replaced: the app's other
            # system/developer messages stay where they are.
            rest = without_system_text(doc, call.operation, text)
            self._render(call, rest, resolved, match.values, keep=True)
            call.replaced_system = 1
        except MissingPromptVariables:
            # The version serving needs a value the app's text does not carry (a tested
            # promotion cannot know): the unchanged app must not break, so its call goes out as
            # it was sent, as when nothing of the prompt is servable. Logged once per version.
            label = resolved.version.label
            if label not in self._unfillable:
                self._unfillable.add(label)
                log.warning(
                    "%s needs variables the adopted app's text does not carry; its calls go "
                    "out as the app sent them",
                    label,
                )
            return
        call.adopted = True

    @property
    def routes_by_model(self) -> bool:
        """More than one provider is configured, so an upload's `model` field matters."""
        return len({route.provider.name for route in self._router.routes}) > 1

    def _asks_usage(self, provider: Provider) -> bool:
        """Whether streams to this provider get stream_options.include_usage added."""
        return provider.stream_usage and provider.name not in self._usage_refused

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
        self._render(call, doc, resolved, ref.variables)

    def _render(
        self,
        call: Call,
        doc: Mapping[str, Any],
        resolved: Resolved,
        variables: Mapping[str, object],
        *,
        keep: bool | None = None,
    ) -> None:
        """Render the resolved version with the variables and inject it into the body (`keep`:
        the request's own system messages stay, whatever the version says)."""
        version = resolved.version
        api: Api = "chat" if call.operation == "chat" else "responses"
        values, rendered = self._rendering(version, api, variables)
        call.variables = values
        reasoning = self._is_reasoning(version.model or doc.get("model"))
        if api == "chat":
            injected = inject_chat(doc, rendered, version, reasoning=reasoning, keep=keep)
            out = injected.body
        else:
            injected = inject_responses(doc, rendered, version, reasoning=reasoning, keep=keep)
            out = injected.body
        call.replaced_system = injected.replaced_system
        call.injected = True
        call.resolved = resolved
        call.request = out
        call.model = out.get("model") if isinstance(out.get("model"), str) else None
        call.body = orjson.dumps(out)

    def _rendering(
        self, version: PromptVersion, api: Api, variables: Mapping[str, object]
    ) -> tuple[Mapping[str, object], tuple[RenderedMessage, ...]]:
        """The coerced variables and the rendered messages, made once per version, API and
        values when every value is text (the common case: the same company, locale, tools from
        call to call), else each time. Neither is changed by anyone after this."""
        key: tuple[object, ...] | None = (version.id, api, *variables.items())
        for value in variables.values():
            if type(value) is not str:  # 1 == True == 1.0 as keys, yet they render apart
                key = None
                break
        if key is not None:
            found = self._rendered.get(key)
            if found is not None:
                return found
        values = coerce_request_variables(variables, api)
        made = (values, render_request(version.template, values, version.label, api))
        if key is not None:
            if len(self._rendered) >= RENDERED_MAX:  # bounded: values come from clients
                self._rendered.clear()
            self._rendered[key] = made
        return made

    def _is_reasoning(self, model: object) -> bool:
        """Whether the model a managed call is sent with takes reasoning-model parameters.

        The model decides the provider, so its `model_quirks.reasoning` globs count too. An
        unroutable model or an unserved alias is False here; prepare() refuses it right after.
        """
        if not isinstance(model, str) or model.startswith(MODEL_ALIAS):
            return False
        found = self._reasoning.get(model)
        if found is None:
            try:
                extra = self._router.provider_for(model).reasoning_models
            except ModelNotRouted:
                extra = ()
            found = is_reasoning_model(model, extra)
            if len(self._reasoning) < 4096:  # bounded: model names come from clients
                self._reasoning[model] = found
        return found

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
        check_depth(body, doc)
        return doc

    async def open(self, call: Call) -> UpstreamResponse:
        """Send the call; the time until the provider's headers counts as upstream wait.

        A provider that refuses the `stream_options` the gateway added (400 naming it: strict
        backends such as vLLM) gets the request once more without it, and is remembered, so
        later streams to it are sent as the client wrote them.
        """
        sent = time.perf_counter()
        try:
            response = await self._upstream.send(
                call.provider, call.method, call.path, call.headers, call.body
            )
            if response.status != 400 or not call.strip_usage:
                return response
            try:
                answer = await response.read()
            finally:
                await response.close()
            if b"stream_options" not in answer:
                return BufferedResponse(response.status, response.headers, answer)
            log.warning(
                "provider %s refused stream_options; streams to it are now sent without it "
                "and their tokens counted by the gateway",
                call.provider.name,
            )
            self._usage_refused.add(call.provider.name)
            call.strip_usage = False
            call.body = _without_usage(call)
            return await self._upstream.send(
                call.provider, call.method, call.path, call.headers, call.body
            )
        finally:
            call.upstream_wait += time.perf_counter() - sent

    # ---- telemetry -----------------------------------------------------------------------------

    def trace(self, call: Call) -> None:
        """Begin the call's span (named once the model is known) and send its context upstream."""
        if self._tracer is None:
            return
        name = span_name(call.genai_operation, call.model, call.method, call.route)
        span = self._tracer.begin(
            name,
            call.client_headers.get(b"traceparent"),
            call.client_headers.get(b"tracestate"),
            call.started_ns,
        )
        call.span = span
        call.headers.extend(span.headers)

    def finish(
        self,
        call: Call,
        *,
        status: int,
        outcome: Outcome | None = None,
        error: GatewayError | None = None,
    ) -> None:
        """Mark the call finished (once a call) and queue it for its record, span and observers.

        The moment is taken now (the record's end, duration and overhead are this call's); the
        record is built, the span ended and the observers told in `settle`, for the calls
        finished in the last SETTLE_DELAY seconds together (SETTLE_SLICE of them per turn of the
        event loop), after the call's task has returned.
        Done at each call's end, that work cost 44.7 µs of CPU per request in the running
        gateway (tracing on); settled together, the gateway's CPU per request fell by 34 µs and
        its added p50 at one connection from about 0.27 to 0.06 ms (benchmarks/README.md). The
        request body's bytes are let go here (the record reads the parsed request).
        """
        call.finished = True
        now = time.perf_counter()
        call.body = None
        self._finished.append((call, status, outcome, error, now))
        if self._settle_at is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a script, a test): settle at once
                self.settle()
                return
            self._settle_at = loop.call_later(SETTLE_DELAY, self._settle_slice)
        elif len(self._finished) == SETTLE_BATCH:  # once: settle soon, not in SETTLE_DELAY
            self._settle_at.cancel()
            self._settle_at = asyncio.get_running_loop().call_soon(self._settle_slice)

    def settle(self) -> None:
        """Build the records of the calls finished since the last time, end their spans and hand
        them to every observer, in the order they finished. Whoever reads what observers keep
        (metrics, the feedback check, shutdown) settles first: every call, at once."""
        if self._settle_at is not None:
            self._settle_at.cancel()
            self._settle_at = None
        finished, self._finished = self._finished, []
        self._settle(finished)

    def _settle_slice(self) -> None:
        """Settle the first SETTLE_SLICE finished calls (or a quarter of them, when more); the
        rest in the next turn of the event loop."""
        finished = self._finished
        take = max(SETTLE_SLICE, len(finished) // 4)
        if len(finished) > take:
            self._finished = finished[take:]
            finished = finished[:take]
            self._settle_at = asyncio.get_running_loop().call_soon(self._settle_slice)
        else:
            self._finished = []
            self._settle_at = None
        self._settle(finished)

    def _settle(self, finished: list[_Finished]) -> None:
        for call, *_ in finished:  # every stream first: the tap's code runs warm (DeferredTap)
            read_stream(call)
        observers = self._observers
        records: list[CallRecord] = []
        for call, status, outcome, error, now in finished:
            try:
                record = self._record(call, status, outcome, error, now)
            except Exception:  # a bug in one call's record must not lose the others'
                log.exception("recording call %s failed", call.request_id)
                continue
            records.append(record)
            if call.span is not None:
                try:
                    call.span.finish(record)
                except Exception:  # nor may a bug in its span cost its metrics, log line, exposure
                    log.exception("ending the span of call %s failed", call.request_id)
            for observer in observers:
                try:
                    observer.call_finished(record)
                except Exception:  # an observer's bug must never fail or slow a call
                    log.exception("observer %r failed", observer)
        for batch_observer in self._batch_observers:
            try:
                batch_observer.calls_finished(records)
            except Exception:
                log.exception("observer %r failed", batch_observer)

    def _template(self, version: PromptVersion) -> str:
        """The version's template JSON, made once per version (versions never change)."""
        found = self._templates.get(version.id)
        if found is None:
            if len(self._templates) >= 10_000:
                self._templates.clear()
            found = self._templates[version.id] = template_json(version)
        return found

    def _record(
        self,
        call: Call,
        status: int,
        outcome: Outcome | None,
        error: GatewayError | None,
        now: float,
    ) -> CallRecord:
        operation = call.genai_operation
        model = (outcome.response_model if outcome else None) or call.model
        input_tokens = output_tokens = None
        cached = 0
        estimated = False
        if outcome is not None and outcome.usage is not None:
            input_tokens, output_tokens = outcome.usage.input_tokens, outcome.usage.output_tokens
            cached = outcome.usage.cached_input_tokens
        elif (
            outcome is not None
            and operation is not None
            and (status < 400 or status == ClientClosedRequest.status)
        ):  # a provider that gave no usage, or a stream cut short by its client (still billed)
            estimated = True
            input_tokens = self._tokens.count(model, _request_texts(call.request))
            output_tokens = (
                self._tokens.count(model, outcome.output_text)
                if outcome.output_text
                else outcome.content_chunks
            )
        cost = input_cost = output_cost = None
        if input_tokens is not None:
            costs = self._settings.prices.costs(model, input_tokens, output_tokens or 0, cached)
            if costs is not None:
                input_cost, output_cost = costs
                cost = input_cost + output_cost
        if error is not None:
            error_type: str | None = error.code
        elif status >= 400:
            error_type = str(status)
        else:
            error_type = None
        resolved = call.resolved
        prompt = None
        if resolved is not None:
            version = resolved.version
            prompt = PromptInfo(
                name=version.name,
                version=version.version,
                number=version.number,
                variant=resolved.variant,
                resolution=resolved.resolution,
                experiment_id=resolved.experiment.id if resolved.experiment else None,
                assignment=resolved.assignment,
                template=self._template(version),
                variables=call.variables or {},
                replaced_system=call.replaced_system or 0,
                adopted=call.adopted,
            )
        request = call.request or {}
        capture = self._capture
        session = session_id(call.client_headers.get(b"x-session-id"))
        return CallRecord(
            request_id=call.request_id,
            trace_id=call.span.trace_id if call.span is not None else None,
            route=call.route,
            method=call.method,
            operation=operation,
            provider=call.provider.name,
            provider_system=provider_system(call.provider.name, call.provider.address),
            server_address=call.provider.address,
            server_port=call.provider.port,
            environment=self._settings.env,
            status=status,
            error_type=error_type,
            stream=call.stream,
            request_model=call.model,
            temperature=_number(request.get("temperature")),
            max_tokens=_integer(
                request.get("max_tokens")
                or request.get("max_completion_tokens")
                or request.get("max_output_tokens")
            ),
            response_model=outcome.response_model if outcome else None,
            response_id=outcome.response_id if outcome else None,
            finish_reasons=tuple(outcome.finish_reasons) if outcome else (),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage_estimated=estimated,
            cost_usd=cost,
            start_ns=call.started_ns,
            end_ns=call.started_ns + int((now - call.started) * 1e9),
            duration_s=now - call.started,
            overhead_ms=call.overhead_ms(now),
            time_to_first_chunk_s=(
                call.first_chunk - call.started if call.first_chunk is not None else None
            ),
            client_disconnected=call.disconnected,
            prompt=prompt,
            user_hash=hash_user(call.user_key) if call.user_key else None,
            request_body=request if capture else None,
            output_text="".join(outcome.output_text) if capture and outcome else None,
            output_tool_calls=(
                tuple((c.id, c.name, c.arguments) for c in outcome.tool_calls)
                if capture and outcome
                else ()
            ),
            session_id=session,
            invocation_parameters=(
                invocation_parameters(request) if self._tracer is not None else None
            ),
            input_cost_usd=input_cost,
            output_cost_usd=output_cost,
            system_texts=call.system_texts,
        )


GENAI_OPERATIONS = {
    CHAT: "chat",
    RESPONSES: "chat",
    "/embeddings": "embeddings",
    "/completions": "text_completion",
}


def _not_loaded(name: str) -> StoreUnavailable:
    """503 for a managed call before the first snapshot: whether `name` exists is not known yet,
    and a 404 would tell clients (which retry a 503) that it never will."""
    return StoreUnavailable(
        f"The prompt registry is not loaded yet (its store has not answered since this gateway "
        f"started, and there is no snapshot file), so prompt {name!r} cannot be resolved. "
        "Retry shortly; /readyz says 503 until it is loaded."
    )


def template_json(version: PromptVersion) -> str:
    """The version's messages with their placeholders, as OpenInference's template attribute."""
    return orjson.dumps([{"role": m.role, "content": m.content} for m in version.messages]).decode()


def _request_texts(request: Mapping[str, Any] | None) -> list[str]:
    """The text a request sends: message contents, a Responses input, an embeddings input."""
    if not request:
        return []
    texts: list[str] = []
    items = request.get("messages") or request.get("input") or request.get("prompt")
    if isinstance(items, str):
        return [items]
    for item in items if isinstance(items, list) else ():
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Mapping):
            content = item.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(
                    p["text"]
                    for p in content
                    if isinstance(p, Mapping) and isinstance(p.get("text"), str)
                )
    if isinstance(request.get("instructions"), str):
        texts.append(request["instructions"])
    return texts


def header_text(header: str | None) -> str | None:
    """A header value as read (latin-1, one character per byte) taken as the UTF-8 text clients
    send: its bytes as UTF-8, latin-1 when they are not valid UTF-8. So a user key means the same
    in X-User-Id as in the body's `user` (the same bucket, PRODUCT §4)."""
    if header is None or header.isascii():
        return header
    raw = header.encode("latin-1", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return header


def _user_header(call: Call) -> str | None:
    """The call's X-User-Id as text (`header_text`)."""
    return header_text(call.client_headers.get(b"x-user-id"))


def session_id(header: str | None) -> str | None:
    """session.id from X-Session-Id (`header_text`), blanks stripped from both ends, at most
    SESSION_ID_MAX characters; None when absent or blank."""
    text = header_text(header)
    if text is None:
        return None
    return text.strip()[:SESSION_ID_MAX] or None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _prompt_headers(wanted: Mapping[bytes, str]) -> PromptHeaders:
    name = wanted.get(b"x-prompt-name") or wanted.get(b"x-prompt-id")
    raw = wanted.get(b"x-prompt-variables")
    variables = None
    if raw:
        # Header bytes arrive as latin-1 text; read them as the UTF-8 JSON clients send, and as
        # latin-1 only when they are not valid UTF-8.
        try:
            variables = orjson.loads(raw.encode("latin-1"))
        except orjson.JSONDecodeError:
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


def _without_usage(call: Call) -> bytes:
    """The call's body without the include_usage the gateway added (the client's bytes when
    it was not rewritten (unmanaged, or served by its adopted version unchanged) and had no
    stream_options field at all: then the field was spliced onto its end, see _splice_usage)."""
    request = dict(call.request or {})
    options = request.get("stream_options")
    if not call.injected and "stream_options" not in request:
        return cast(bytes, call.body)[: -len(_USAGE_SPLICE)] + b"}"
    rest = (
        {k: v for k, v in options.items() if k != "include_usage"}
        if isinstance(options, Mapping)
        else None
    )
    if rest:
        request["stream_options"] = rest
    else:  # nothing of the client's own left (it may have sent null): the field goes
        request.pop("stream_options", None)
    return orjson.dumps(request)


def _splice_usage(body: bytes, doc: Mapping[str, Any]) -> bytes:
    """Add stream_options.include_usage, keeping every other byte of the client's body."""
    if "stream_options" in doc:
        options = doc["stream_options"] if isinstance(doc["stream_options"], Mapping) else {}
        return orjson.dumps({**doc, "stream_options": {**options, "include_usage": True}})
    end = body.rstrip()
    return end[:-1] + _USAGE_SPLICE


def new_request_id(incoming: str | None) -> str:
    """The client's X-Request-Id when it is sane, else a fresh one, `req_` and 44 hex digits:
    the time in milliseconds since the Unix epoch (12 digits), then 128 random bits from the
    operating system's generator (unguessable: a request id is what feedback is posted for).

    Time first, as in UUIDv7 (RFC 9562 §5.7): ids sort by creation, so the stores' request id
    indexes take each batch of exposures at their end instead of at random places. With
    random ids a batch touched one index page per exposure, and writing it cost about 30 µs of
    CPU per exposure on SQLite; time-ordered, about 6 µs (benchmarks/README.md).
    """
    if incoming and len(incoming) <= 128 and incoming.isascii() and incoming.isprintable():
        return incoming
    return f"req_{time.time_ns() // 1_000_000:012x}{_random_bytes.take(16).hex()}"


class _RandomBytes:
    """os.urandom read 4 KiB at a time: one system call per 256 ids instead of one per id.

    A system call releases the GIL, and while a background thread (the outcome writer) is
    busy the serving thread then waits to get it back: per call, that cost more than the
    urandom itself. Used from the event loop's thread only.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._pool = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        at = self._at
        if at + n > len(self._pool):
            self._pool, at = os.urandom(self._size), 0
        self._at = at + n
        return self._pool[at : at + n]


_random_bytes = _RandomBytes()
