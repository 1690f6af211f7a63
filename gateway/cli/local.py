"""`LocalBackend`: the registry's operations on the store itself, as the admin API runs them.

Each method does what its /admin handler does (`gateway/api/admin_*.py`), with the same use
cases and codec functions (`gateway.prompts`, `gateway.experiments`, `stores.codec`), so both
answer the same values and the same errors. Writes are audited as the command line's `--actor`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.adoption import adopt_candidate, candidate_to_dict, list_adopted
from gateway.cli.backend import Json, TestProgress
from gateway.core.diffing import diff_versions
from gateway.core.model import Environment, Experiment
from gateway.core.promptfile import PromptFile
from gateway.core.rendering import coerce_variables, render
from gateway.core.resolution import resolve
from gateway.errors import InvalidPrompt
from gateway.experiments import (
    conclude_experiment,
    experiment_results,
    stored_experiment,
)
from gateway.files import ExperimentSpec
from gateway.prompts import (
    PromptRegistry,
    activation_result,
    existing_version,
    prompt_summary,
    stored_prompt,
    utc_now,
)
from gateway.settings import Settings
from gateway.stores import codec
from gateway.stores.base import Store
from gateway.stores.factory import open_store


class LocalBackend:
    """The store the settings name, opened by this process."""

    def __init__(self, store: Store, settings: Settings, *, actor: str) -> None:
        self.store = store
        self.settings = settings
        self.actor = actor
        self.registry = PromptRegistry(store, threshold=settings.promotion.threshold)

    @classmethod
    async def open(cls, settings: Settings, *, actor: str) -> LocalBackend:
        """Open the store and check it answers (StoreUnavailable, naming it, when not)."""
        store = open_store(settings.store_url)
        try:
            await store.ping()
        except BaseException:
            await store.close()
            raise
        return cls(store, settings, actor=actor)

    async def close(self) -> None:
        await self.store.close()

    # ---- prompts -----------------------------------------------------------------------------

    async def push(self, files: Sequence[PromptFile]) -> list[Json]:
        results = await self.registry.push(files, actor=self.actor)
        return [
            {"name": r.name, "version": r.version, "status": r.status, "file": r.source}
            for r in results
        ]

    async def prompts(self) -> list[Json]:
        prompts = (await self.store.snapshot()).prompts
        return [prompt_summary(prompts[name]) for name in sorted(prompts)]

    async def prompt(self, name: str) -> Json:
        state = await stored_prompt(self.store, name)
        return {
            "name": name,
            "active": state.active,
            "versions": [codec.version_to_dict(v) for v in state.versions],
        }

    async def version(self, name: str, version: str) -> Json:
        chosen = existing_version(await stored_prompt(self.store, name), version)
        return codec.version_to_dict(chosen)

    async def render(self, name: str, version: str, variables: Mapping[str, object]) -> Json:
        chosen = existing_version(await stored_prompt(self.store, name), version)
        messages = render(chosen.template, coerce_variables(dict(variables)), chosen.label)
        return {
            "name": chosen.name,
            "version": chosen.version,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }

    async def resolve(self, name: str, env: Environment | None, user: str | None) -> Json:
        await stored_prompt(self.store, name)
        got = resolve(
            await self.store.snapshot(),
            name,
            environment=env or self.settings.env,
            overrides=self.settings.overrides,
            user_key=user,
            request_id=uuid.uuid4().hex,
            now=utc_now(),
        )
        return {
            "name": name,
            "version": got.version.version,
            "number": got.version.number,
            "variant": got.variant,
            "resolution": got.resolution,
            "experiment": got.experiment.id if got.experiment else None,
        }

    async def test(
        self,
        name: str,
        version: str,
        file: PromptFile,
        *,
        concurrency: int,
        progress: TestProgress,
    ) -> Json:
        # Imported on use: the runner and the provider client are only needed here.
        from gateway.testing import run_and_record
        from gateway.upstream.client import HttpUpstream

        chosen = existing_version(await stored_prompt(self.store, name), version)
        if file.name != name:
            raise InvalidPrompt(
                f"{file.source}: the file describes prompt {file.name!r}, not {name!r}.",
                param="name",
            )
        upstream = HttpUpstream(self.settings.upstream)
        progress.start(chosen.label, len(file.tests))
        try:
            return await run_and_record(
                self.registry,
                self.settings,
                upstream,
                chosen,
                file.tests,
                actor=self.actor,
                concurrency=concurrency,
                now=utc_now(),
                on_done=lambda _: progress.advance(),
            )
        finally:
            await upstream.close()

    async def diff(self, name: str, old: str, new: str) -> Json:
        state = await stored_prompt(self.store, name)
        text = diff_versions(existing_version(state, old), existing_version(state, new))
        return {"name": name, "from": old, "to": new, "changed": bool(text), "diff": text}

    async def promote(self, name: str, version: str, *, force: bool) -> Json:
        await stored_prompt(self.store, name)
        entry = await self.registry.promote(name, version, actor=self.actor, force=force)
        return activation_result(name, version, entry)

    async def rollback(self, name: str) -> Json:
        await stored_prompt(self.store, name)
        entry = await self.registry.rollback(name, actor=self.actor)
        return activation_result(name, entry.version, entry)

    # ---- experiments -------------------------------------------------------------------------

    async def create_experiment(self, spec: ExperimentSpec) -> Json:
        await stored_prompt(self.store, spec.prompt_name)
        experiment, result = await self.registry.ensure_experiment(spec, actor=self.actor)
        return codec.experiment_to_dict(experiment) | {"result": result}

    async def experiments(self) -> list[Json]:
        snapshot = await self.store.snapshot()
        now = utc_now()
        found = [e for state in snapshot.prompts.values() for e in state.experiments]
        found.sort(key=lambda e: (not e.is_running(now), e.start))
        return [_listed(e) for e in found]

    async def stop_experiment(self, experiment_id: str) -> Json:
        await stored_experiment(self.store, experiment_id)
        stopped = await self.registry.stop_experiment(experiment_id, actor=self.actor)
        return codec.experiment_to_dict(stopped)

    async def experiment_results(self, experiment_id: str) -> Json:
        await stored_experiment(self.store, experiment_id)
        found = await experiment_results(self.store, experiment_id, self.settings.experiments)
        return found.to_json()

    async def conclude_experiment(self, experiment_id: str, *, force: bool) -> Json:
        await stored_experiment(self.store, experiment_id)
        conclusion = await conclude_experiment(
            self.store,
            experiment_id,
            settings=self.settings.experiments,
            threshold=self.settings.promotion.threshold,
            force=force,
            actor=self.actor,
            clock=utc_now,
        )
        return {
            "experiment": codec.experiment_to_dict(conclusion.experiment),
            "promoted": conclusion.promoted,
            "results": conclusion.results.to_json(),
        }

    # ---- adoption ----------------------------------------------------------------------------

    async def candidates(self) -> list[Json]:
        return [candidate_to_dict(c, name) for c, name in await list_adopted(self.store)]

    async def adopt(self, candidate: str, name: str, variables: Mapping[str, str]) -> Json:
        return await adopt_candidate(
            self.store,
            candidate,
            name,
            variables,
            actor=self.actor,
            clock=utc_now,
            new_id=lambda: uuid.uuid4().hex,
        )

    # ---- audit -------------------------------------------------------------------------------

    async def audit(self, prompt: str | None, limit: int) -> list[Json]:
        entries = await self.store.audit(prompt_name=prompt, limit=limit)
        return [codec.audit_to_dict(e) for e in entries]


def _listed(experiment: Experiment) -> dict[str, Any]:
    """An experiment as `GET /admin/experiments` lists it, with whether it runs now."""
    return codec.experiment_to_dict(experiment) | {"running_now": experiment.is_running(utc_now())}
