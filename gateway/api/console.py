"""The console's routes under /ui: sign-in, pages, and forms that call the admin use cases.

Its templates, assets and pure parts (session signing, charts, page shapes) live in `gateway/ui/`.

Every route but the sign-in page needs a session (`guard`), assets included; every
POST needs the session's CSRF token and the role of the admin route whose use case it calls
(`UI_ACTIONS` names that route, `auth.ROUTE_ROLES` its role): the console is never a way around
the admin API's roles. Pages are Jinja templates (`templates/`), assets are files of the package
(`static/`). Every answer under /ui, error pages included, carries the headers of
`SECURITY_HEADERS` (`with_console_headers`, applied to the ASGI `send` of the whole app), whose
Content-Security-Policy allows no script at all; Litestar's own errors there (404, 405, 413, 500)
are console pages too (`console_errors`). Pages seen without a session (sign-in, errors) are
styled by one inline stylesheet (`PLAIN_CSS`) that the policy allows by its SHA-256 only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

from litestar import Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException, NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath
from litestar.response import File, Redirect, Template
from markupsafe import Markup

from gateway.adoption import adopt_candidate, candidate_to_dict, list_adopted
from gateway.api.admin_base import AdminContext
from gateway.api.auth import FORCE_ROLE, Authenticator, Principal, require, role_for
from gateway.core.diffing import side_by_side
from gateway.core.model import RegistrySnapshot
from gateway.core.rendering import render
from gateway.core.stats import ExperimentResults
from gateway.core.trend import difference_over_time
from gateway.errors import GatewayError, InsufficientRole, InvalidAdminToken
from gateway.experiments import conclude_experiment, experiment_results, stored_experiment
from gateway.prompts import existing_version, stored_prompt, utc_now
from gateway.settings import Role
from gateway.testing import run_and_record, served_tests
from gateway.ui import views
from gateway.ui.session import (
    COOKIE,
    FLASH_COOKIE,
    FLASH_MAX_AGE,
    SIGN_IN_COOKIE,
    Revocations,
    Session,
    SessionSigner,
    csrf_ok,
)

log = logging.getLogger("gateway.console")

UI = Path(__file__).parent.parent / "ui"
TEMPLATES = UI / "templates"
STATIC = UI / "static"
MEDIA_TYPES = {".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}
"""Content types of the assets (sent with nosniff: a stylesheet must say it is one). Litestar
adds `; charset=utf-8` to text types itself."""

PLAIN_CSS = Markup((STATIC / "plain.css").read_text(encoding="utf-8"))
"""The style of the pages shown without a session (sign-in, errors), inlined in them: no asset
answers without a session. A Jinja global (`console_templates`), written as is."""
PLAIN_CSS_HASH = base64.b64encode(hashlib.sha256(PLAIN_CSS.encode()).digest()).decode()

CSP = (
    f"default-src 'none'; style-src 'self' 'sha256-{PLAIN_CSS_HASH}'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No script, no inline style but PLAIN_CSS (by its hash), nothing from another origin."""

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
"""What every answer under /ui carries, whatever answered it (page, redirect, asset, error)."""
_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)

FORM_MAX_BYTES = 64 * 1024
"""The largest body a console route reads (413 above)."""

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def in_console(path: str) -> bool:
    """Whether a request path is the console's (`/ui` and below)."""
    return path == "/ui" or path.startswith("/ui/")


def with_console_headers(send: Send) -> Send:
    """An ASGI `send` that puts SECURITY_HEADERS on the response start (replacing any of the
    same names): wraps the whole app's `send` for /ui paths, so errors raised anywhere (a
    guard, an exception handler, routing) carry them too."""

    async def sending(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            kept = [h for h in message.get("headers", ()) if h[0].lower() not in _SECURITY_NAMES]
            message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
        await send(message)

    return sending


def console_templates(engine: Any) -> None:
    """TemplateConfig's engine callback: the Jinja globals the console's templates use."""
    engine.engine.globals["plain_css"] = PLAIN_CSS


UI_ACTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/ui/prompts/{name}/promote"): ("POST", "/admin/prompts/{name}/promote"),
    ("POST", "/ui/prompts/{name}/rollback"): ("POST", "/admin/prompts/{name}/rollback"),
    ("POST", "/ui/prompts/{name}/versions/{version}/test"): (
        "POST",
        "/admin/prompts/{name}/versions/{version}/test",
    ),
    ("POST", "/ui/experiments/{id}/stop"): ("POST", "/admin/experiments/{id}/stop"),
    ("POST", "/ui/experiments/{id}/conclude"): ("POST", "/admin/experiments/{id}/conclude"),
    ("POST", "/ui/adoption/adopt"): ("POST", "/admin/adoption/adopt"),
    ("POST", "/ui/sign-out"): ("GET", "/admin/prompts"),
}
"""Each console POST -> the admin route whose use case it calls; it needs that route's role
(`auth.ROUTE_ROLES`). A POST missing here needs admin. Every GET needs a session (viewer)."""

RESULTS_TTL = 5.0
"""Seconds the Experiment page reuses an experiment's results as they are: computing them costs
the store a pass over the units (for 100,000 users, about 45 ms in SQLite; Redis sends every unit
to be summed in Python, some 0.4 s), so a page viewed again, or by several people, answers at
once. Concluding always computes them afresh."""

RESULTS_STALE = 120.0
"""Up to this age, results older than RESULTS_TTL are still shown (with their age) while a
background task computes them again; the page never waits for that. Older ones are computed
before the page answers."""

WROTE_COOKIE = "gateway_console_wrote"
"""Names the prompts this browser changed in the last WROTE_MAX_AGE seconds: pages read those
prompts from the store rather than from the app's snapshot, which trails a write by the store's
poll interval (and in another worker process, by that worker's). Not secret: a forged one only
makes pages read a few prompts from the store."""
WROTE_MAX_AGE = 30
WROTE_MAX_NAMES = 8

Registry = Callable[[], RegistrySnapshot | None]
"""The app's in-memory snapshot (the request path's SnapshotCache), None before it loaded."""


def ui_role(method: str, path_template: str) -> Role:
    """The role a console route needs: viewer for a page, the admin route's role for a POST."""
    if method == "GET":
        return "viewer"
    mirrored = UI_ACTIONS.get((method, path_template))
    return role_for(*mirrored) if mirrored else "admin"


class SignInNeeded(Exception):
    """No valid session: pages redirect to the sign-in page."""


class CsrfRefused(Exception):
    """A POST whose form lacks the session's CSRF token (403)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The signed-in user of one request."""

    principal: Principal
    session: Session

    def can(self, role: Role) -> bool:
        """Whether the buttons of `role` show."""
        return self.principal.allows(role)


class Console:
    """The console's state for one app: the session signer and the results cache."""

    def __init__(
        self, ctx: AdminContext, authenticator: Authenticator, secret: bytes, current: Registry
    ) -> None:
        self.ctx = ctx
        self.authenticator = authenticator
        self.signer = SessionSigner(secret, ctx.settings.ui.session_max_age)
        self.revocations = Revocations()
        self._current = current
        self._results: dict[str, tuple[float, ExperimentResults]] = {}
        self._refreshing: dict[str, asyncio.Task[ExperimentResults | None]] = {}
        self._forgotten: dict[str, int] = {}
        """How often each experiment's results were dropped: a computation that began before a
        change does not store its result after it."""

    async def registry(self, request: ASGIConnection) -> RegistrySnapshot:  # type: ignore[type-arg]
        """The registry for a page: the app's snapshot, with the prompts this browser just
        changed read from the store (WROTE_COOKIE); the store's whole registry only before the
        snapshot first loaded."""
        snapshot = self._current()
        if snapshot is None:
            return await self.ctx.store.snapshot()
        wrote = views.wrote_names(request.cookies.get(WROTE_COOKIE), WROTE_MAX_NAMES)
        if not wrote:
            return snapshot
        fresh = await asyncio.gather(*(self.ctx.store.prompt(n) for n in wrote))
        prompts = dict(snapshot.prompts)
        prompts.update((state.name, state) for state in fresh if state.versions)
        return RegistrySnapshot(prompts, snapshot.revision)

    def caller(self, connection: ASGIConnection) -> Caller:  # type: ignore[type-arg]
        """The signed-in caller, or SignInNeeded (no cookie, a forged, expired or signed-out
        session, or its token left the config)."""
        session = self.signer.read(connection.cookies.get(COOKIE), int(time.time()))
        if session is None or self.revocations.revoked(session):
            raise SignInNeeded
        token = self.signer.owner(session, self.authenticator.tokens)
        if token is None:  # the token left the config since sign-in
            raise SignInNeeded
        return Caller(Principal(token.name, token.role), session)

    async def results(self, experiment_id: str) -> tuple[ExperimentResults, float]:
        """The experiment's results and their age in seconds: reused for RESULTS_TTL seconds,
        then shown while a background task computes them again, up to RESULTS_STALE."""
        now = time.monotonic()
        cached = self._results.get(experiment_id)
        if cached is not None and now - cached[0] < RESULTS_STALE:
            if now - cached[0] >= RESULTS_TTL and experiment_id not in self._refreshing:
                task = asyncio.create_task(self._refresh(experiment_id, background=True))
                self._refreshing[experiment_id] = task
            return cached[1], now - cached[0]
        found = await self._refresh(experiment_id, background=False)
        assert found is not None  # not in the background: an error was raised
        return found, 0.0

    async def _refresh(self, experiment_id: str, *, background: bool) -> ExperimentResults | None:
        """Compute the results and keep them, unless the experiment changed meanwhile. In the
        `background`, an error is logged and the results shown stay; otherwise it is raised."""
        started, generation = time.monotonic(), self._forgotten.get(experiment_id, 0)
        try:
            found = await experiment_results(
                self.ctx.store, experiment_id, self.ctx.settings.experiments
            )
        except GatewayError as exc:
            if background:
                log.warning("console: results of %s not refreshed: %s", experiment_id, exc)
                return None
            raise
        finally:
            if background:
                self._refreshing.pop(experiment_id, None)
        if generation == self._forgotten.get(experiment_id, 0):  # else: a change came meanwhile
            self._results[experiment_id] = (started, found)
        return found

    def forget(self, experiment_id: str) -> None:
        """Drop cached results after a change to the experiment."""
        self._results.pop(experiment_id, None)
        self._forgotten[experiment_id] = self._forgotten.get(experiment_id, 0) + 1


def console_router(console: Console) -> Router:
    """The /ui router, bound to this console's store, registry, settings, tokens and snapshot."""
    ctx, authenticator = console.ctx, console.authenticator
    store, registry, settings = ctx.store, ctx.registry, ctx.settings

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        if handler.opt.get("public"):
            return
        caller = console.caller(connection)
        connection.state.caller = caller  # before the checks: a refusal's log names the caller
        method = str(connection.scope.get("method", "GET"))
        template = str(connection.scope.get("path_template", ""))
        if method == "POST":
            # Litestar hands guards the handler's own Request: its form, parsed here, is kept
            # for the handler's `request.form()`.
            form = await cast(Request[Any, Any, Any], connection).form()
            if not csrf_ok(caller.session, form.get("csrf")):
                raise CsrfRefused
            require(caller.principal, ui_role(method, template), f"{method} {template}")

    def page(
        request: Request[Any, Any, Any], name: str, status: int = 200, **context: Any
    ) -> Template:
        caller: Caller | None = getattr(request.state, "caller", None)
        pending = request.cookies.get(FLASH_COOKIE)
        notice = (
            console.signer.read_flash(caller.session, pending, int(time.time()))
            if caller and pending
            else None
        )
        response = Template(
            template_name=name,
            context={
                "caller": caller,
                "csrf": caller.session.csrf if caller else "",
                "environment": settings.env,
                "flash": notice,
                **context,
            },
            status_code=status,
        )
        if pending:  # shown once
            response.delete_cookie(FLASH_COOKIE, path="/ui")
        return response

    def flash(request: Request[Any, Any, Any], response: Response[Any], message: str) -> None:
        """Have the next page show `message` once (a signed cookie: a link cannot fake it)."""
        caller: Caller = request.state.caller
        response.cookies.append(
            console_cookie(
                request,
                FLASH_COOKIE,
                console.signer.flash(caller.session, message, int(time.time())),
                max_age=FLASH_MAX_AGE,
            )
        )

    async def production_now(request: Request[Any, Any, Any], name: str) -> views.Served:
        """What production requests of `name` get now, read from the store and resolved as the
        request path resolves (overrides, a running experiment)."""
        snapshot, state = await asyncio.gather(console.registry(request), store.prompt(name))
        prompts = dict(snapshot.prompts)
        prompts[name] = state
        own = settings.overrides.seen_by("production", settings.env)
        return views.served(
            RegistrySnapshot(prompts, snapshot.revision), name, "production", own, utc_now()
        )

    def actor(request: Request[Any, Any, Any], action: str, target: str) -> str:
        """The audit actor of this request's action; names the action for `outcome`'s log."""
        caller: Caller = request.state.caller
        request.state.action = f"{action} {target}"
        return caller.principal.name

    def outcome(request: Request[Any, Any, Any], refusal: GatewayError | None) -> None:
        """Log what came of this request's action: done, or refused with the reason code."""
        caller: Caller = request.state.caller
        action = getattr(request.state, "action", None) or f"POST {request.url.path}"
        if refusal is None:
            log.info("console %s by %s: done", action, caller.principal.name)
        else:
            log.info(
                "console %s by %s: refused (%s, %d)",
                action,
                caller.principal.name,
                refusal.code,
                refusal.status,
            )

    # ---- sign-in ------------------------------------------------------------------------------

    def sign_in_page(request: Request[Any, Any, Any], status: int, error: str = "") -> Template:
        nonce, form_token = console.signer.sign_in_pair()
        response = page(request, "sign_in.html.j2", status, form_token=form_token, error=error)
        response.cookies.append(
            console_cookie(request, SIGN_IN_COOKIE, nonce, max_age=3600, path="/ui/sign-in")
        )
        return response

    @get("/sign-in", opt={"public": True})
    async def sign_in_form(request: Request[Any, Any, Any]) -> Response[Any]:
        """The sign-in page: an admin token field."""
        try:
            console.caller(request)
            return Redirect("/ui/prompts")
        except SignInNeeded:
            return sign_in_page(request, 200)

    @post("/sign-in", opt={"public": True}, status_code=303)
    async def sign_in(request: Request[Any, Any, Any]) -> Response[Any]:
        """Check the token; on success set the session cookie and go to the Prompts page."""
        form = await request.form()
        client = request.client.host if request.client else "an unknown address"
        if not console.signer.sign_in_ok(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")):
            log.warning("console sign-in refused from %s: the form's token is wrong", client)
            return sign_in_page(request, 403, "The form expired; sign in again.")
        try:
            token = authenticator.token_for(str(form.get("token") or ""))
        except InvalidAdminToken as exc:
            log.warning("console sign-in refused from %s: not a configured admin token", client)
            return sign_in_page(request, 401, exc.message)
        _, cookie = console.signer.open(token, int(time.time()))
        log.info("console sign-in by %s (%s) from %s", token.name, token.role, client)
        response = Redirect("/ui/prompts", status_code=303)
        response.cookies.append(
            console_cookie(request, COOKIE, cookie, max_age=settings.ui.session_max_age)
        )
        response.delete_cookie(SIGN_IN_COOKIE, path="/ui/sign-in")
        return response

    @post("/sign-out", status_code=303)
    async def sign_out(request: Request[Any, Any, Any]) -> Redirect:
        """End the session: its id is revoked, so a copy of the cookie is refused from now on
        (by this process: see `Revocations`)."""
        caller: Caller = request.state.caller
        console.revocations.revoke(caller.session, int(time.time()))
        log.info("console sign-out by %s", caller.principal.name)
        response = Redirect("/ui/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    @get("/static/{file:str}")
    async def static(file: FromPath[str]) -> File:
        """The console's assets, from the package, to signed-in browsers only."""
        path = STATIC / file
        if "/" in file or file.startswith(".") or not path.is_file():
            raise NotFoundException(f"No console asset {file!r}.")
        media = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        return File(path, content_disposition_type="inline", media_type=media)

    @get("/")
    async def home() -> Redirect:
        """The console opens on the Prompts page."""
        return Redirect("/ui/prompts")

    # ---- prompts ------------------------------------------------------------------------------

    def wrote(request: Request[Any, Any, Any], response: Response[Any], name: str) -> None:
        """Remember in the browser that it changed `name` (WROTE_COOKIE)."""
        names = views.wrote_names(request.cookies.get(WROTE_COOKIE), WROTE_MAX_NAMES)
        kept = [name, *(n for n in names if n != name)][:WROTE_MAX_NAMES]
        response.cookies.append(
            console_cookie(request, WROTE_COOKIE, views.wrote_cookie(kept), max_age=WROTE_MAX_AGE)
        )

    @get("/prompts")
    async def prompts_page(request: Request[Any, Any, Any]) -> Template:
        """Every prompt: versions, what each environment serves, experiment, last change."""
        snapshot, last = await asyncio.gather(console.registry(request), store.last_changes())
        rows = views.prompt_rows(snapshot, settings.overrides, settings.env, utc_now(), last)
        return page(request, "prompts.html.j2", rows=rows, threshold=settings.promotion.threshold)

    async def prompt_view(
        request: Request[Any, Any, Any], name: str, status: int = 200, **extra: Any
    ) -> Template:
        state = await stored_prompt(store, name)
        q = request.query_params
        ordered = sorted(state.versions, key=lambda v: v.semver, reverse=True)
        shown = existing_version(state, q.get("show") or ordered[0].version)
        variables = {v: q.get(f"var.{v}") or f"<{v}>" for v in shown.variables}
        try:
            rendered = [(m.role, m.content) for m in render(shown.template, variables, shown.label)]
        except GatewayError as exc:
            rendered, extra["render_error"] = [], exc.message
        diff_from = q.get("from") or (ordered[1].version if len(ordered) > 1 else shown.version)
        diff_to = q.get("to") or ordered[0].version
        diff = side_by_side(existing_version(state, diff_from), existing_version(state, diff_to))
        return page(
            request,
            "prompt.html.j2",
            status,
            state=state,
            versions=ordered,
            shown=shown,
            variables=variables,
            rendered=rendered,
            diff=diff,
            diff_from=diff_from,
            diff_to=diff_to,
            experiment=state.experiment_running(utc_now()),
            threshold=settings.promotion.threshold,
            force_role=FORCE_ROLE,
            editor="editor",
            **extra,
        )

    @get("/prompts/{name:str}")
    async def prompt_page(request: Request[Any, Any, Any], name: FromPath[str]) -> Template:
        """One prompt: versions, a rendered version, a diff, the last test run, actions."""
        return await prompt_view(request, name)

    async def acting(
        request: Request[Any, Any, Any],
        name: str,
        work: Callable[[], Awaitable[str]],
        **query: str,
    ) -> Response[Any]:
        """Run a prompt action; on success back to the prompt page, which shows the notice
        `work` returns once (`flash`); on a refusal the prompt page again with the message and
        the refusal's status (409 when the state changed since the form was shown)."""
        try:
            notice = await work()
        except GatewayError as exc:
            outcome(request, exc)
            return await prompt_view(request, name, exc.status, error=exc.message)
        outcome(request, None)
        suffix = f"?{urlencode(query)}" if query else ""
        response = Redirect(f"/ui/prompts/{quote(name)}{suffix}", status_code=303)
        wrote(request, response, name)
        flash(request, response, notice)
        return response

    def shown(form: Any, key: str) -> str | None:
        """A form field naming what the page showed; None when the form has none."""
        value = form.get(key)
        return None if value is None else str(value)

    @post("/prompts/{name:str}/promote", status_code=303)
    async def promote(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        """Promote the version in the form (forced only for admins); 409 when the form's
        `active` (the active version the page showed) is no longer active."""
        form = await request.form()
        version, force = str(form.get("version") or ""), form.get("force") == "yes"
        if force:
            require(request.state.caller.principal, FORCE_ROLE, "A forced promotion")

        async def work() -> str:
            who = actor(request, "promote", f"{name}@{version}{' (forced)' if force else ''}")
            await stored_prompt(store, name)
            entry = await registry.promote(
                name, version, actor=who, force=force, expect_active=shown(form, "active")
            )
            cell = await production_now(request, name)
            if entry is None:
                now = views.serves_now(cell)
                return f"{version} was already active; nothing was changed ({now})."
            return views.activation_notice(f"Promoted {version}", version, cell)

        return await acting(request, name, work, show=version)

    @post("/prompts/{name:str}/rollback", status_code=303)
    async def rollback(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
        """Re-activate the previous active version; 409 when the form's `active` and `target`
        (what the page showed: the active version and the one the rollback goes to) differ from
        the state now, so a form submitted twice rolls back one step, not two."""
        form = await request.form()

        async def work() -> str:
            who = actor(request, "rollback", name)
            await stored_prompt(store, name)
            entry = await registry.rollback(
                name,
                actor=who,
                expect_active=shown(form, "active"),
                expect_target=shown(form, "target"),
            )
            before, after = (entry.before or {}).get("active"), str(entry.version)
            cell = await production_now(request, name)
            return views.activation_notice(f"Rolled back from {before} to {after}", after, cell)

        return await acting(request, name, work)

    @post("/prompts/{name:str}/versions/{version:str}/test", status_code=303)
    async def run_tests(
        request: Request[Any, Any, Any], name: FromPath[str], version: FromPath[str]
    ) -> Response[Any]:
        """Run the version's tests from the server's prompts_dir and store the pass rate."""

        async def work() -> str:
            who = actor(request, "test", f"{name}@{version}")
            chosen = existing_version(await stored_prompt(store, name), version)
            await run_and_record(
                registry,
                settings,
                ctx.upstream,
                chosen,
                await served_tests(settings, name),
                actor=who,
                concurrency=8,
                now=utc_now(),
            )
            stored = existing_version(await store.prompt(name), version).test_results
            if stored is None:  # not possible: the run was just stored
                return f"Tests of {version} ran."
            return views.test_notice(version, stored, settings.promotion.threshold)

        return await acting(request, name, work, show=version)

    # ---- experiments --------------------------------------------------------------------------

    @get("/experiments")
    async def experiments_page(request: Request[Any, Any, Any]) -> Template:
        """Every experiment, running ones first."""
        snapshot = await console.registry(request)
        now = utc_now()
        found = [e for s in snapshot.prompts.values() for e in s.experiments]
        found.sort(key=lambda e: (not e.is_running(now), e.start), reverse=False)
        return page(request, "experiments.html.j2", experiments=found, now=now)

    async def experiment_view(
        request: Request[Any, Any, Any], experiment_id: str, status: int = 200, **extra: Any
    ) -> Template:
        experiment = await stored_experiment(store, experiment_id)
        (results, age), totals = await asyncio.gather(
            console.results(experiment_id),
            store.period_totals(experiment_id, experiment.metric),
        )
        over_time = difference_over_time(totals)
        snapshot = await console.registry(request)
        prompt_state = snapshot.prompts.get(experiment.prompt_name)
        treatment = (
            prompt_state.by_version.get(experiment.treatment_version) if prompt_state else None
        )
        lookup = request.query_params.get("request")
        exposure = await store.exposure(lookup) if lookup else None
        if exposure is not None and exposure.experiment_id != experiment_id:
            exposure = None
        return page(
            request,
            "experiment.html.j2",
            status,
            experiment=experiment,
            running=experiment.is_running(utc_now()),
            results=results,
            chart=views.results_chart(results),
            results_age=age,
            over_time=over_time,
            over_time_chart=views.over_time_chart(results.metric, over_time),
            metric_unit=views.metric_unit(results.metric),
            treatment=treatment,
            threshold=settings.promotion.threshold,
            lookup=lookup,
            exposure=exposure,
            exposure_link=views.trace_link(
                settings.ui.trace_url, request_id=exposure.request_id, trace_id=exposure.trace_id
            )
            if exposure
            else None,
            **extra,
        )

    @get("/experiments/{id:str}")
    async def experiment_page(request: Request[Any, Any, Any], id: FromPath[str]) -> Template:
        """One experiment's results (PRODUCT §11), charts and table, and its actions."""
        return await experiment_view(request, id)

    async def experiment_acting(
        request: Request[Any, Any, Any], experiment_id: str, work: Callable[[], Awaitable[str]]
    ) -> Response[Any]:
        """Run an experiment action; on success back to its page, which shows the notice `work`
        returns followed by what production serves now, once; on a refusal the page again
        with the message and the refusal's status."""
        try:
            done = await work()
        except GatewayError as exc:
            outcome(request, exc)
            return await experiment_view(request, experiment_id, exc.status, error=exc.message)
        finally:
            console.forget(experiment_id)
        outcome(request, None)
        response = Redirect(f"/ui/experiments/{quote(experiment_id)}", status_code=303)
        found = await store.find_experiment(experiment_id)
        if found is not None:
            wrote(request, response, found.prompt_name)
            cell = await production_now(request, found.prompt_name)
            done = f"{done}: for {found.prompt_name}, {views.serves_now(cell)}."
        flash(request, response, done)
        return response

    @post("/experiments/{id:str}/stop", status_code=303)
    async def stop(request: Request[Any, Any, Any], id: FromPath[str]) -> Response[Any]:
        """Stop the experiment (409 when it is stopped already)."""

        async def work() -> str:
            who = actor(request, "stop", id)
            await stored_experiment(store, id)
            # The page offers Stop only for a running experiment, so every stop form says it
            # was running: stopping a stopped one is a 409, never a "done" that changed nothing.
            await registry.stop_experiment(id, actor=who, expect_running=True)
            return f"Stopped {id}"

        return await experiment_acting(request, id, work)

    @post("/experiments/{id:str}/conclude", status_code=303)
    async def conclude(request: Request[Any, Any, Any], id: FromPath[str]) -> Response[Any]:
        """Stop it and promote the treatment when the results recommend it (gate applies, unless
        an admin's form says `force`); 409 when the form's `promote` (whether the page's button
        said it promotes) no longer holds."""
        form = await request.form()
        promises = form.get("promote")
        force = form.get("force") == "yes"
        if force:
            require(request.state.caller.principal, FORCE_ROLE, "A forced promotion")

        async def work() -> str:
            who = actor(request, "conclude", f"{id}{' (forced)' if force else ''}")
            await stored_experiment(store, id)
            done = await conclude_experiment(
                store,
                id,
                settings=settings.experiments,
                threshold=settings.promotion.threshold,
                force=force,
                actor=who,
                clock=utc_now,
                expect_promote=None if promises is None else promises == "yes",
            )
            promoted = f" and promoted {done.experiment.treatment_version}" if done.promoted else ""
            return f"Concluded {id}{promoted}"

        return await experiment_acting(request, id, work)

    # ---- adoption -----------------------------------------------------------------------------

    async def adoption_view(
        request: Request[Any, Any, Any], status: int = 200, **extra: Any
    ) -> Template:
        # Grouping runs in a worker thread; adopted prompts are looked for in the page's registry
        # (the app's snapshot), not in a read of the whole store.
        found = await list_adopted(store, await console.registry(request))
        return page(
            request,
            "adoption.html.j2",
            status,
            candidates=[candidate_to_dict(c, name) for c, name in found],
            capture=settings.adoption.capture,
            editor=ui_role("POST", "/ui/adoption/adopt"),
            **extra,
        )

    @get("/adoption")
    async def adoption_page(request: Request[Any, Any, Any]) -> Template:
        """Hard-coded system prompts captured on unmanaged calls, grouped into candidates
        (PRODUCT §14), and for editors a form to adopt each adoptable one."""
        return await adoption_view(request)

    @post("/adoption/adopt", status_code=303)
    async def adopt(request: Request[Any, Any, Any]) -> Response[Any]:
        """Adopt the candidate in the form as a new prompt (the admin route's use case); then
        its page. The form's `var.<name>` fields rename the template's variables."""
        form = await request.form()
        candidate, name = str(form.get("candidate") or ""), str(form.get("name") or "").strip()
        renames = {
            key[4:]: str(value).strip()
            for key, value in form.items()
            if key.startswith("var.") and str(value).strip() and str(value).strip() != key[4:]
        }
        try:
            await adopt_candidate(
                store,
                candidate,
                name,
                renames,
                actor=actor(request, "adopt", f"{candidate} as {name}"),
                clock=utc_now,
                new_id=lambda: uuid.uuid4().hex,
            )
        except GatewayError as exc:
            outcome(request, exc)
            return await adoption_view(
                request, exc.status, error=exc.message, tried=candidate, tried_name=name
            )
        outcome(request, None)
        response = Redirect(f"/ui/prompts/{quote(name)}", status_code=303)
        wrote(request, response, name)
        adopted = (await store.prompt(name)).active
        flash(
            request,
            response,
            f"Adopted as {name} {adopted}: unmanaged calls with its system prompt are served as "
            "this prompt now.",
        )
        return response

    # ---- audit --------------------------------------------------------------------------------

    @get("/audit")
    async def audit_page(request: Request[Any, Any, Any]) -> Template:
        """The audit log, newest first, of one prompt when chosen."""
        prompt = request.query_params.get("prompt") or None
        entries, snapshot = await asyncio.gather(
            store.audit(prompt_name=prompt, limit=200), console.registry(request)
        )
        return page(
            request,
            "audit.html.j2",
            entries=[(e, views.audit_change(e)) for e in reversed(entries)],
            prompt=prompt,
            names=sorted(n for n, s in snapshot.prompts.items() if s.versions),
        )

    # ---- errors and headers -------------------------------------------------------------------

    def to_sign_in(request: Request[Any, Any, Any], _: SignInNeeded) -> Response[Any]:
        return sign_in_needed(console, request)

    def refused(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        message = (
            exc.message
            if isinstance(exc, InsufficientRole)
            else "The form's CSRF token is missing or wrong; reload the page and try again."
        )
        caller: Caller | None = getattr(request.state, "caller", None)
        if request.method == "POST" and caller is not None:
            code = "insufficient_role" if isinstance(exc, InsufficientRole) else "csrf"
            action = getattr(request.state, "action", None) or f"POST {request.url.path}"
            log.info("console %s by %s: refused (%s, 403)", action, caller.principal.name, code)
        return page(request, "error.html.j2", 403, message=message, title="Not allowed")

    def failed(request: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
        return page(
            request,
            "error.html.j2",
            exc.status,
            message=exc.message,
            title="Not found" if exc.status == 404 else "Refused",
        )

    return Router(
        "/ui",
        route_handlers=[
            sign_in_form,
            sign_in,
            sign_out,
            static,
            home,
            prompts_page,
            prompt_page,
            promote,
            rollback,
            run_tests,
            experiments_page,
            experiment_page,
            stop,
            conclude,
            audit_page,
            adoption_page,
            adopt,
        ],
        guards=[guard],
        include_in_schema=False,
        exception_handlers={
            SignInNeeded: to_sign_in,
            CsrfRefused: refused,
            InsufficientRole: refused,
            GatewayError: failed,
        },
        request_max_body_size=FORM_MAX_BYTES,
    )


# ---- errors raised outside the console's handlers ------------------------------------------------

ExceptionHandler = Callable[[Request[Any, Any, Any], Any], Response[Any]]

ERROR_TITLES = {
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    413: "Too large",
}


def error_page(
    console: Console,
    caller: Caller | None,
    status: int,
    message: str,
    *,
    back: tuple[str, str] = ("/ui/prompts", "Back to the prompts"),
) -> Template:
    """The console's error page: `status`, a title for it, `message`, a link `back` (href,
    text); with the navigation when `caller` is signed in."""
    return Template(
        template_name="error.html.j2",
        context={
            "caller": caller,
            "csrf": caller.session.csrf if caller else "",
            "environment": console.ctx.settings.env,
            "title": ERROR_TITLES.get(status, "Refused" if status < 500 else "Console error"),
            "message": message,
            "back": back,
        },
        status_code=status,
    )


def console_cookie(
    request: Request[Any, Any, Any], key: str, value: str, *, max_age: int, path: str = "/ui"
) -> Cookie:
    """A console cookie: HttpOnly, SameSite=Strict, Secure over https."""
    return Cookie(
        key=key,
        value=value,
        path=path,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def sign_in_needed(console: Console, request: Request[Any, Any, Any]) -> Response[Any]:
    """No session: a GET of a page goes to the sign-in page (302); an asset, or any other
    method, is a 401 page."""
    if request.method == "GET" and not request.url.path.startswith("/ui/static/"):
        return Redirect("/ui/sign-in")
    if request.method != "GET":  # an action without a session (a copied cookie, signed out)
        client = request.client.host if request.client else "unknown"
        log.info(
            "console %s %s from %s: refused (no session, 401)",
            request.method,
            request.url.path,
            client,
        )
    return error_page(
        console,
        None,
        401,
        "This needs a console session, and there is none (signed out, expired, or never "
        "signed in).",
        back=("/ui/sign-in", "Sign in"),
    )


def console_errors(console: Console, fallback: ExceptionHandler) -> ExceptionHandler:
    """An app-level exception handler: for a /ui path, a console HTML page (unknown path 404,
    wrong method 405, form too large 413, any other error by its status), or, without a
    session, what `sign_in_needed` answers (the sign-in page's own errors excepted); elsewhere
    `fallback`'s answer (JSON for /v1 and /admin). `fallback` always runs: it logs what an
    unexpected error needs logged."""

    def handle(request: Request[Any, Any, Any], exc: Any) -> Response[Any]:
        answer = fallback(request, exc)
        path = request.url.path
        if not in_console(path):
            return answer
        caller = None
        if path != "/ui/sign-in":
            try:
                caller = console.caller(request)
            except SignInNeeded:
                return sign_in_needed(console, request)
        status = answer.status_code or 500
        if status == 404 and isinstance(exc, NotFoundException) and exc.detail == "Not Found":
            message = f"There is no console page at {path}."
        elif status == 405:
            message = (
                f"{request.method} is not allowed on {path}: it is the address of a form's "
                "button, not a page."
            )
        elif status == 413:
            message = f"The form is larger than the console accepts ({FORM_MAX_BYTES // 1024} KiB)."
        elif isinstance(exc, GatewayError):
            message = exc.message
        elif isinstance(exc, HTTPException) and status < 500:
            message = str(exc.detail)
        else:
            message = "The console failed to handle this request; the error is logged."
        return error_page(console, caller, status, message)

    return handle
