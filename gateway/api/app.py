"""The composition root of the server: settings in, a Litestar app out.

`create_app(settings, store=..., upstream=...)` is the seam tests use instead of monkeypatching.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

from litestar import Litestar, MediaType, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers import asgi
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from gateway import __version__
from gateway.api.admin import SECURITY, admin_controllers
from gateway.api.admin_base import AdminContext
from gateway.api.auth import Authenticator
from gateway.api.console import (
    TEMPLATES,
    Console,
    console_errors,
    console_router,
    console_templates,
    in_console,
    with_console_headers,
)
from gateway.api.errors import (
    gateway_error_handler,
    http_error_handler,
    internal_error_handler,
    openai_error,
)
from gateway.api.feedback import feedback_route
from gateway.api.proxy import PREFIX as PROXY_PREFIX
from gateway.api.proxy import ProxyApp
from gateway.api.server import refusals
from gateway.core.model import RegistrySnapshot
from gateway.core.redaction import redact
from gateway.core.resolution import dangling_overrides
from gateway.core.stats import warm_up as warm_up_stats
from gateway.errors import GatewayError
from gateway.prompts import PromptRegistry
from gateway.recording.capture import CaptureRecorder
from gateway.recording.outcomes import OutcomeRecorder
from gateway.service import GatewayService, new_request_id
from gateway.settings import Settings, load, snapshot_file_for
from gateway.stores.base import Store
from gateway.stores.cached import SnapshotCache, SnapshotFile
from gateway.stores.factory import open_store
from gateway.telemetry.events import Tracer
from gateway.telemetry.logs import AccessLog
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otlp import ExportSettings, OtlpExporter, Sampler
from gateway.telemetry.tokens import TokenCounter
from gateway.upstream.base import Upstream
from gateway.upstream.client import HttpUpstream

log = logging.getLogger("gateway")


class OverrideCheck:
    """Checks the version overrides in force against each snapshot served: an override that
    names a prompt or version the registry lacks 404s every call of that prompt, so it is logged
    as an error (again whenever the set changes) and /readyz says `degraded`."""

    def __init__(self, settings: Settings) -> None:
        self._overrides = settings.overrides
        self._environment = settings.env
        self.dangling: list[str] = []
        """What is wrong with each override that points nowhere, in the last snapshot."""

    def __call__(self, snapshot: RegistrySnapshot) -> None:
        found = dangling_overrides(snapshot, self._overrides, self._environment)
        if found != self.dangling:
            for problem in found:
                log.error("override points nowhere: %s; every call of that prompt is 404", problem)
            if self.dangling and not found:
                log.info("every version override points at a version in the registry again")
        self.dangling = found


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    upstream: Upstream | None = None,
    tracer: Tracer | None = None,
) -> GatewayApp:
    """Build the app: the proxy under /v1, operations endpoints, and their lifecycles."""
    store = store or open_store(settings.store_url)
    upstream = upstream or HttpUpstream(settings.upstream)
    if tracer is None and settings.telemetry.tracing:
        tracer = _exporter(settings)
    # The file is named after the store actually served (a test's or a caller's own), and
    # records it: another store's snapshot is never served from it.
    snapshot_file = SnapshotFile(
        settings.snapshot_path or snapshot_file_for(store.location), source=store.location
    )
    cache = SnapshotCache(store, disk=snapshot_file)
    overrides = OverrideCheck(settings)
    cache.listeners.append(overrides)
    recorder = OutcomeRecorder(
        store,
        queue_size=settings.experiments.queue_size,
        flush_interval=settings.experiments.flush_interval,
    )
    # Adoption capture (PRODUCT §14) observes calls only when it is on: off, nothing is kept.
    capture = (
        CaptureRecorder(
            store,
            limit=settings.adoption.max_candidates,
            queue_size=settings.adoption.queue_size,
            flush_interval=settings.adoption.flush_interval,
        )
        if settings.adoption.capture
        else None
    )
    metrics = Metrics(
        tracer.dropped_spans if tracer is not None else lambda: 0,
        dropped_exposures=lambda: recorder.dropped_exposures,
        dropped_captures=lambda: capture.dropped if capture is not None else 0,
        registry_stale=lambda: cache.stale,
        refused_connections=lambda: refusals,
        buffered_bytes=lambda: proxy.budget.held,
    )
    tokens = TokenCounter(settings.telemetry.tiktoken_cache)
    access_log = AccessLog()
    service = GatewayService(
        settings,
        cache,
        upstream,
        tracer=tracer,
        observers=(metrics, access_log, *([capture] if capture else [])),
        batch_observers=(recorder,),
        tokens=tokens,
    )
    proxy = ProxyApp(
        service,
        max_body_bytes=settings.server.max_body_bytes,
        max_upload_bytes=settings.server.max_upload_bytes,
        max_buffered_bytes=settings.server.max_buffered_bytes,
        keep_text=settings.telemetry.capture_content,
    )

    @asgi(PROXY_PREFIX, is_mount=True, copy_scope=False)
    async def openai_api(scope: Any, receive: Any, send: Any) -> None:
        await proxy(scope, receive, send)

    @get("/healthz", media_type=MediaType.JSON, include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON, include_in_schema=False)
    async def readyz() -> Response[dict[str, Any]]:
        """200 whenever a snapshot serves (`degraded` while the store is unreachable or holds
        older data); 503 only before the first snapshot (PRODUCT §6). A store outage must not
        take every replica out of a load balancer. `stale: true` when the store holds older
        data than served, `from_disk: true` while the snapshot served is the on-disk one."""
        current = cache.current
        ready = cache.healthy and not cache.stale and not overrides.dangling
        body: dict[str, Any] = {
            "status": "ready" if ready else "degraded",
            "store": "ok" if cache.healthy else "unreachable",
            "revision": int(current.revision) if current.revision.isdigit() else 0,
            "prompts": len(current.prompts),
            "environment": settings.env,
        }
        if cache.stale:
            body["stale"] = True
        if overrides.dangling:
            body["dangling_overrides"] = overrides.dangling
        if cache.from_disk:
            body["from_disk"] = True
        return Response(body, status_code=200 if cache.loaded else 503)

    @get("/metrics", include_in_schema=False)
    async def prometheus() -> Response[str]:
        """Prometheus text format."""
        service.settle()  # the calls finished a moment ago count
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def warm_up_console() -> None:
        warm_up_stats()
        engine = cast(JinjaTemplateEngine, litestar.template_engine).engine
        for name in engine.list_templates():
            engine.get_template(name)  # compiled once into the engine's cache

    async def start() -> None:
        if settings.admin_tokens:
            # The console and /admin results need scipy, whose import takes about a second, and
            # the console's templates, whose compiling takes 3 to 35 ms each on a first view:
            # paid in a thread at start, not by the first person who opens a page.
            threading.Thread(target=warm_up_console, name="warm-up", daemon=True).start()
        access_log.start()
        recorder.start()
        if capture is not None:
            capture.start()
        await cache.start()
        providers = ", ".join(sorted({r.provider.name for r in settings.routes}))
        if not cache.loaded:
            log.warning(
                "gateway started, registry not loaded yet: store %s has not answered and there "
                "is no snapshot file %s; managed calls get 503 store_unavailable (retryable) "
                "and /readyz 503 until it answers (environment %s, providers %s)",
                redact(store.location),
                snapshot_file.path,
                settings.env,
                providers,
            )
            return
        log.info(
            "gateway ready: environment %s, %d prompts, providers %s, snapshot file %s",
            settings.env,
            len(cache.current.prompts),
            providers,
            snapshot_file.path,
        )
        if cache.loaded and not cache.current.prompts:
            log.warning(
                "serving an empty registry (store %s, %s): every managed call is 404 until "
                "prompts are pushed: gateway prompts push PATH",
                redact(settings.store_url),
                settings.sources(Path.cwd()),
            )

    async def stop() -> None:
        # Each step is bounded: a shutdown that waits forever (a store that never answers, a
        # thread that never returns) would keep the process past its SIGTERM until it is killed,
        # losing what the later steps would have written.
        service.settle()  # the last calls' records, spans and exposures, before their writers stop
        await _bounded("writing queued experiment outcomes", recorder.stop())
        if capture is not None:
            await _bounded("writing captured prompts", capture.stop())
        await _bounded("stopping the registry watch", cache.stop())
        await _bounded("closing provider connections", upstream.close())
        await _bounded("closing the store", store.close())
        if tracer is not None:
            tracer.shutdown()  # joins its thread for at most 3 s
        access_log.stop()  # joins its thread for at most 5 s

    feedback = feedback_route(
        recorder,
        store,
        cache,
        flush_interval=settings.experiments.flush_interval,
        settle=service.settle,
    )
    admin = AdminContext(
        store=store,
        registry=PromptRegistry(store, threshold=settings.promotion.threshold),
        settings=settings,
        upstream=upstream,
    )
    authenticator = Authenticator(settings.admin_tokens)
    # Without ui.session_secret, each start makes its own: sessions end with the process.
    secret = settings.ui.session_secret or secrets.token_bytes(32)
    console = Console(admin, authenticator, secret, lambda: cache.current if cache.loaded else None)
    litestar = Litestar(
        route_handlers=[
            openai_api,
            feedback,
            healthz,
            readyz,
            prometheus,
            *admin_controllers(admin),
            console_router(console),
        ],
        on_startup=[start],
        on_shutdown=[stop],
        after_request=_with_request_id,
        state=State({"authenticator": authenticator}),
        template_config=TemplateConfig(
            directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=console_templates
        ),
        # JSON in OpenAI's shape, but under /ui the console's HTML error pages.
        exception_handlers={
            GatewayError: console_errors(console, gateway_error_handler),
            HTTPException: console_errors(console, http_error_handler),
            Exception: console_errors(console, internal_error_handler),
        },
        openapi_config=OpenAPIConfig(
            title="Prompt Gateway",
            version=__version__,
            components=SECURITY,
            use_handler_docstrings=True,
        ),
    )
    own = frozenset(
        route.path for route in litestar.routes if route.path.startswith(PROXY_PREFIX + "/")
    )
    if any("{" in path for path in own):  # GatewayApp matches its own paths as plain text
        raise ValueError(f"routes under {PROXY_PREFIX} take no path parameters: {sorted(own)}")
    return GatewayApp(litestar, proxy, own)


SHUTDOWN_STEP_SECONDS = 10.0
"""How long one step of the app's shutdown may take before it is abandoned (and logged)."""


async def _bounded(step: str, work: Awaitable[None]) -> None:
    """Await one shutdown step for at most SHUTDOWN_STEP_SECONDS; log it when it did not end."""
    try:
        await asyncio.wait_for(work, SHUTDOWN_STEP_SECONDS)
    except TimeoutError:
        log.error("shutdown: %s did not finish within %g s; going on", step, SHUTDOWN_STEP_SECONDS)


class GatewayApp:
    """The ASGI app: HTTP requests for `/v1` and below go straight to the proxy, except the
    paths of Litestar's own routes there (`/v1/feedback`); the rest (operations, admin, the
    lifespan) to Litestar, which also mounts the proxy at `/v1` for whatever else reaches it.

    Through Litestar, every proxied call paid its router, its exception middleware and a
    wrapper around each `send` (about 15% of a proxied call's CPU, measured with py-spy); the
    proxy answers every error itself, so none of that is needed on its path.

    Every answer under /ui gets the console's security headers here, at the outermost `send`,
    whatever made it (a page, a guard's refusal, an exception handler, routing's 404).
    """

    __slots__ = ("_own", "_proxy", "litestar")

    def __init__(self, litestar: Litestar, proxy: ProxyApp, own: frozenset[str]) -> None:
        self.litestar = litestar
        self._proxy = proxy
        self._own = own
        """Litestar's routes under /v1 (matched with or without a trailing slash)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if (path.startswith("/v1/") or path == PROXY_PREFIX) and (
                path.rstrip("/") not in self._own
            ):
                await self._proxy(scope, receive, send)
                return
            if in_console(path):
                send = with_console_headers(send)
        await self.litestar(scope, receive, send)

    @property
    def routes(self) -> list[Any]:
        """Litestar's routes (the proxy's mount at /v1 among them)."""
        routes: list[Any] = self.litestar.routes
        return routes

    @property
    def on_startup(self) -> list[Any]:
        """Litestar's startup hooks (run by the lifespan)."""
        hooks: list[Any] = self.litestar.on_startup
        return hooks


async def _with_request_id(response: Response[Any]) -> Response[Any]:
    """Give Litestar's own responses an x-request-id too (the proxy sets its own).

    Also turns the HTML 404 page of Litestar's OpenAPI router into the JSON not_found every other
    unknown path gets: that router serves any /schema/{path} with a handler of its own that
    returns the page rather than raising NotFoundException, so the exception handlers never see
    it.
    """
    if (
        response.status_code == 404
        and response.media_type == MediaType.HTML
        and not isinstance(response, Template)  # the console's own 404 pages stay pages
    ):
        response = openai_error(
            404,
            "Unknown path under /schema. The admin API is described at /schema (a page), "
            "/schema/openapi.json and /schema/openapi.yaml.",
            "not_found",
        )
    response.headers.setdefault("x-request-id", new_request_id(None))
    return response


def _exporter(settings: Settings) -> OtlpExporter:
    telemetry = settings.telemetry
    assert telemetry.traces_endpoint is not None
    return OtlpExporter(
        ExportSettings(
            endpoint=telemetry.traces_endpoint,
            headers=telemetry.headers,
            resource={**dict(telemetry.resource), "deployment.environment.name": settings.env},
            sampler=Sampler.parse(*telemetry.sampler),
            capture_content=telemetry.capture_content,
            span_kind=telemetry.span_kind,
            schedule_delay=telemetry.schedule_delay,
            max_queue=telemetry.max_queue,
            max_batch=telemetry.max_batch,
            timeout=telemetry.export_timeout,
        )
    )


def app_from_environment() -> GatewayApp:
    """Factory for `gateway serve` workers: settings from GATEWAY_CONFIG and the environment."""
    app = create_app(load(None, os.environ))
    app.on_startup.append(_freeze_startup_objects)
    return app


YOUNG_THRESHOLD = 10_000
"""Tracked objects allocated (and not yet freed) before the collector's youngest pass runs.

CPython's default, 700, is reached again and again by the objects of the calls in flight alone
(64 calls hold a few thousand): the collector then walked live objects it could not free about
once per 15 calls, about 165 µs each (11 µs per call). Most of a call's objects are freed by
reference counting, which takes them off the count, so at 10,000 the pass runs when cyclic
garbage or long-lived objects have accumulated, not because calls are in flight: -6.5% CPU per
request under load (benchmarks/README.md), and at most about 10,000 objects of cyclic garbage
wait for it."""


def _freeze_startup_objects() -> None:
    """Hide what startup loaded (modules, classes, the snapshot) from the garbage collector,
    and let the youngest generation grow to `YOUNG_THRESHOLD` before it is collected.

    Otherwise each of its full passes walks all of it again; freezing it gave the proxy about 17%
    more requests per second (benchmarks/README.md). Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
