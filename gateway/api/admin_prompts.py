"""`/admin/prompts`: list, push a prompt file, show, render, test, resolve, diff, promote, rollback.

Each handler calls the registry's use cases (`gateway.prompts`, `core.registry`,
`core.resolution`, `gateway.testing`), the ones the command line calls, and answers the shapes
`gateway prompts ... --json` prints.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter

from gateway.api.admin_base import (
    AdminContext,
    AdminController,
    OptionalBody,
    PromptFileBody,
    PromptFileDTO,
    audited,
    documented,
    principal,
)
from gateway.api.admin_models import (
    ActivationOut,
    DiffOut,
    PromoteIn,
    PromptDetail,
    PromptSummary,
    PromptVersionOut,
    PushOut,
    RenderIn,
    RenderOut,
    ResolveOut,
    TestRunOut,
    shaped,
)
from gateway.api.auth import FORCE_ROLE, require
from gateway.core.diffing import diff_versions
from gateway.core.model import AuditEntry, Environment, PromptState
from gateway.core.promptfile import parse_prompt_file
from gateway.core.rendering import coerce_variables, render
from gateway.core.resolution import resolve
from gateway.errors import InvalidPrompt, InvalidRequest
from gateway.prompts import (
    activation_result,
    existing_version,
    prompt_summary,
    unknown_prompt,
    utc_now,
)
from gateway.stores import codec
from gateway.testing import run_and_record, served_tests

Source = Annotated[
    str,
    QueryParameter(
        description="What to call the file in messages and results, e.g. its path on the client"
    ),
]


def activation(name: str, active: str | None, entry: AuditEntry | None) -> ActivationOut:
    """A promotion's or rollback's result, as `gateway prompts promote --json` prints it."""
    return shaped(activation_result(name, active, entry), ActivationOut)


def prompt_controller(ctx: AdminContext) -> type[AdminController]:
    """The /admin/prompts controller, bound to this app's store, registry and settings."""
    store, registry, settings = ctx.store, ctx.registry, ctx.settings

    async def stored(name: str) -> PromptState:
        state = await store.prompt(name)
        if state.versions:
            return state
        raise unknown_prompt(name, (await store.snapshot()).prompts)

    class PromptController(AdminController):
        """Prompts and their versions."""

        path = "/admin/prompts"
        tags = ["prompts"]  # noqa: RUF012 (Litestar's Controller attribute)

        @get("/", summary="List prompts", responses=documented())
        async def list_prompts(self) -> list[PromptSummary]:
            """Every prompt with its version count, newest, newest tested and active versions,
            and the experiment running on it."""
            snapshot = await store.snapshot()
            prompts = snapshot.prompts
            return [
                shaped(prompt_summary(prompts[name]), PromptSummary) for name in sorted(prompts)
            ]

        @post(
            "/",
            dto=PromptFileDTO,
            return_dto=None,
            summary="Push one prompt file",
            responses={
                200: ResponseSpec(
                    list[PushOut],
                    description="Every version was already stored with the same content",
                    generate_examples=False,
                ),
                **documented(409, 413),
            },
        )
        async def push(
            self,
            request: Request[Any, Any, Any],
            data: JSONBody[PromptFileBody],
            source: Source = "request body",
        ) -> Response[list[PushOut]]:
            """Create the versions the file describes: 201 when one was created, 200 when all were
            already stored with the same content, 409 (nothing written) when one is stored with
            other content. The file is checked as `gateway prompts push` checks it."""
            file = parse_prompt_file(data.doc, source)
            results = await registry.push([file], actor=audited(request, "push", file.name))
            body = [PushOut(r.name, r.version, r.status, r.source) for r in results]
            created = any(r.status == "created" for r in results)
            return Response(body, status_code=201 if created else 200)

        @get("/{name:str}", summary="Show a prompt's versions", responses=documented(404))
        async def show(self, name: FromPath[str]) -> PromptDetail:
            """The prompt's versions with every field, test results included."""
            state = await stored(name)
            versions = [shaped(codec.version_to_dict(v), PromptVersionOut) for v in state.versions]
            return PromptDetail(name=name, active=state.active, versions=versions)

        @get(
            "/{name:str}/versions/{version:str}",
            summary="Show one version",
            responses=documented(404),
        )
        async def show_version(
            self, name: FromPath[str], version: FromPath[str]
        ) -> PromptVersionOut:
            """One version with every field, test results included."""
            chosen = existing_version(await stored(name), version)
            return shaped(codec.version_to_dict(chosen), PromptVersionOut)

        @post(
            "/{name:str}/versions/{version:str}/render",
            status_code=200,
            summary="Render a version",
            operation_class=OptionalBody,
            responses=documented(404, 413),
        )
        async def render_version(
            self,
            name: FromPath[str],
            version: FromPath[str],
            data: JSONBody[RenderIn | None] = None,
        ) -> RenderOut:
            """The messages the version renders to with these variables (400 naming any that are
            missing)."""
            chosen = existing_version(await stored(name), version)
            values = coerce_variables(data.variables if data else {})
            messages = render(chosen.template, values, chosen.label)
            return shaped(
                {
                    "name": chosen.name,
                    "version": chosen.version,
                    "messages": [{"role": m.role, "content": m.content} for m in messages],
                },
                RenderOut,
            )

        @post(
            "/{name:str}/versions/{version:str}/test",
            dto=PromptFileDTO,
            return_dto=None,
            status_code=200,
            summary="Run a version's tests",
            operation_class=OptionalBody,
            responses=documented(404, 413, 502),
        )
        async def test_version(
            self,
            request: Request[Any, Any, Any],
            name: FromPath[str],
            version: FromPath[str],
            data: JSONBody[PromptFileBody | None] = None,
            source: Source = "request body",
            concurrency: Annotated[int, QueryParameter(ge=1, le=64)] = 8,
        ) -> TestRunOut:
            """Run the tests of the prompt file in the body (or, without a body, of the prompt's
            file in the server's prompts_dir) through the configured providers, and store the
            pass rate on the version; `is_tested` when it reaches the promotion threshold. A run
            that cannot reach a provider is 502 test_run_aborted and stores nothing."""
            chosen = existing_version(await stored(name), version)
            if data is None:
                tests = await served_tests(settings, name)
            else:
                file = parse_prompt_file(data.doc, source)
                if file.name != name:
                    raise InvalidPrompt(
                        f"{source}: the file describes prompt {file.name!r}, not {name!r}.",
                        param="name",
                    )
                if not file.tests:
                    raise InvalidRequest(
                        f"No tests for prompt {name!r} in {source}; add a tests: list to its file."
                    )
                tests = list(file.tests)
            result = await run_and_record(
                registry,
                settings,
                ctx.upstream,
                chosen,
                tests,
                actor=audited(request, "test", chosen.label),
                concurrency=concurrency,
                now=utc_now(),
            )
            return shaped(result, TestRunOut)

        @get(
            "/{name:str}/resolve",
            summary="Which version serves a user",
            responses=documented(404),
        )
        async def resolve_version(
            self,
            name: FromPath[str],
            env: Annotated[
                Environment | None, QueryParameter(description="Default: the server's env")
            ] = None,
            user: Annotated[
                str | None, QueryParameter(description="The user key (X-User-Id)")
            ] = None,
        ) -> ResolveOut:
            """The version and variant that would serve this user in this environment now, and
            why (pinned, override, experiment or environment)."""
            await stored(name)
            environment = env or settings.env
            got = resolve(
                await store.snapshot(),
                name,
                environment=environment,
                # This server's PROMPT_OVERRIDES are its own environment's, as on the console.
                overrides=settings.overrides.seen_by(environment, settings.env),
                user_key=user,
                request_id=uuid.uuid4().hex,
                now=utc_now(),
            )
            return ResolveOut(
                name=name,
                version=got.version.version,
                number=got.version.number,
                variant=got.variant,
                resolution=got.resolution,
                experiment=got.experiment.id if got.experiment else None,
            )

        @get("/{name:str}/diff", summary="Diff two versions", responses=documented(404))
        async def diff(
            self,
            name: FromPath[str],
            old: Annotated[str, QueryParameter(name="from", description="The older version")],
            new: Annotated[str, QueryParameter(name="to", description="The newer version")],
        ) -> DiffOut:
            """A unified diff of the two versions' parameters and messages."""
            state = await stored(name)
            text = diff_versions(existing_version(state, old), existing_version(state, new))
            return DiffOut(name=name, from_=old, to=new, changed=bool(text), diff=text)

        @post(
            "/{name:str}/promote",
            status_code=200,
            summary="Make a version active",
            responses=documented(404, 409, 413),
        )
        async def promote(
            self, request: Request[Any, Any, Any], name: FromPath[str], data: JSONBody[PromoteIn]
        ) -> ActivationOut:
            """Make the version the production version when its last test run reached the
            threshold; 409 with the pass rate otherwise. `force` skips the gate, needs the admin
            role and is audited as forced."""
            if data.force:
                require(principal(request), FORCE_ROLE, "A forced promotion")
            await stored(name)
            actor = audited(request, "promote", f"{name}@{data.version}")
            entry = await registry.promote(name, data.version, actor=actor, force=data.force)
            return activation(name, data.version, entry)

        @post(
            "/{name:str}/rollback",
            status_code=200,
            summary="Re-activate the previous version",
            responses=documented(404, 409),
        )
        async def rollback(
            self, request: Request[Any, Any, Any], name: FromPath[str]
        ) -> ActivationOut:
            """Re-activate the version that was active before the current one (409 when there
            is none)."""
            await stored(name)
            entry = await registry.rollback(name, actor=audited(request, "rollback", name))
            return activation(name, entry.version, entry)

    return PromptController
