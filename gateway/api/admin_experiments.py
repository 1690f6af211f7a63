"""`/admin/experiments`: list, create, show, stop, results, conclude (PRODUCT §11).

Handlers call the use cases of `gateway.prompts` and `gateway.experiments`, the ones
`gateway experiments ...` calls, and answer the shapes it prints with `--json`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from gateway.api.admin_base import (
    AdminContext,
    AdminController,
    OptionalBody,
    audited,
    documented,
)
from gateway.api.admin_models import (
    ConcludeIn,
    ConclusionOut,
    ExperimentCreated,
    ExperimentIn,
    ExperimentListed,
    ExperimentOut,
    ResultsOut,
    shaped,
)
from gateway.core.model import Experiment
from gateway.experiments import conclude_experiment, experiment_results, unknown_experiment
from gateway.files import ExperimentSpec, parse_time
from gateway.prompts import unknown_prompt, utc_now
from gateway.stores import codec


def listed(experiment: Experiment) -> ExperimentListed:
    """An experiment as `GET /admin/experiments` lists it, with whether it runs now."""
    doc = codec.experiment_to_dict(experiment) | {"running_now": experiment.is_running(utc_now())}
    return shaped(doc, ExperimentListed)


def experiment_controller(ctx: AdminContext) -> type[AdminController]:
    """The /admin/experiments controller, bound to this app's store, registry and settings."""
    store, registry, settings = ctx.store, ctx.registry, ctx.settings

    async def stored(experiment_id: str) -> Experiment:
        found = await store.find_experiment(experiment_id)
        if found is not None:
            return found
        snapshot = await store.snapshot()
        known = (e.id for state in snapshot.prompts.values() for e in state.experiments)
        raise unknown_experiment(experiment_id, known)

    class ExperimentController(AdminController):
        """A/B experiments between two versions of a prompt."""

        path = "/admin/experiments"
        tags = ["experiments"]  # noqa: RUF012 (Litestar's Controller attribute)

        @get("/", summary="List experiments", responses=documented())
        async def list_experiments(self) -> list[ExperimentListed]:
            """Every experiment, those running now first, then by start."""
            snapshot = await store.snapshot()
            now = utc_now()
            found = [e for state in snapshot.prompts.values() for e in state.experiments]
            found.sort(key=lambda e: (not e.is_running(now), e.start))
            return [listed(e) for e in found]

        @post(
            "/",
            summary="Create an experiment",
            responses={
                200: ResponseSpec(
                    ExperimentCreated,
                    description="The experiment already exists with these settings",
                    generate_examples=False,
                ),
                **documented(404, 409, 413),
            },
        )
        async def create(
            self, request: Request[Any, Any, Any], data: JSONBody[ExperimentIn]
        ) -> Response[ExperimentCreated]:
            """Start an experiment: 201 created, 200 when it exists as asked, 409 when it exists
            with other settings or another experiment runs on the prompt in its time (nothing
            is written then)."""
            spec = ExperimentSpec(
                id=data.id,
                prompt_name=data.prompt_name,
                control_version=data.control_version,
                treatment_version=data.treatment_version,
                traffic_split=data.traffic_split,
                start=parse_time(data.start, "start"),
                end=parse_time(data.end, "end"),
                metric=data.metric,
            )
            state = await store.prompt(data.prompt_name)
            if not state.versions:
                raise unknown_prompt(data.prompt_name, (await store.snapshot()).prompts)
            actor = audited(request, "create experiment", data.id)
            experiment, result = await registry.ensure_experiment(spec, actor=actor)
            body = shaped(
                codec.experiment_to_dict(experiment) | {"result": result}, ExperimentCreated
            )
            return Response(body, status_code=201 if result == "created" else 200)

        @get("/{id:str}", summary="Show an experiment", responses=documented(404))
        async def show(self, id: FromPath[str]) -> ExperimentListed:
            """One experiment, with whether it runs now."""
            return listed(await stored(id))

        @post(
            "/{id:str}/stop",
            status_code=200,
            summary="Stop an experiment",
            responses=documented(404),
        )
        async def stop(self, request: Request[Any, Any, Any], id: FromPath[str]) -> ExperimentOut:
            """Stop it; its prompt goes back to environment resolution. Stopping a stopped one
            changes nothing."""
            await stored(id)
            stopped = await registry.stop_experiment(id, actor=audited(request, "stop", id))
            return shaped(codec.experiment_to_dict(stopped), ExperimentOut)

        @get(
            "/{id:str}/results",
            summary="Results of an experiment (PRODUCT §11)",
            responses=documented(404),
        )
        async def results(self, id: FromPath[str]) -> ResultsOut:
            """Per-arm users, requests, means and 95% intervals, the difference, the test's
            p-value, the sample-ratio check and the recommendation."""
            await stored(id)
            found = await experiment_results(store, id, settings.experiments)
            return shaped(found.to_json(), ResultsOut)

        @post(
            "/{id:str}/conclude",
            status_code=200,
            summary="Conclude an experiment",
            operation_class=OptionalBody,
            responses=documented(404, 409, 413),
        )
        async def conclude(
            self,
            request: Request[Any, Any, Any],
            id: FromPath[str],
            data: JSONBody[ConcludeIn | None] = None,
        ) -> ConclusionOut:
            """Stop it and, when the results recommend `promote_treatment`, promote the treatment
            (the pass-rate gate applies unless `force`; when it refuses, 409 and nothing
            changes). Audited as one change."""
            await stored(id)
            conclusion = await conclude_experiment(
                store,
                id,
                settings=settings.experiments,
                threshold=settings.promotion.threshold,
                force=data.force if data else False,
                actor=audited(request, "conclude", id),
                clock=utc_now,
            )
            return ConclusionOut(
                experiment=shaped(codec.experiment_to_dict(conclusion.experiment), ExperimentOut),
                promoted=conclusion.promoted,
                results=shaped(conclusion.results.to_json(), ResultsOut),
            )

    return ExperimentController
