"""The registry's use cases, shared by the command line and the admin API.

Each one runs a pure plan from `core.registry` through the store's atomic `apply`, with the clock
and id source passed in so tests can fix them.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.core import registry as plans
from gateway.core.model import (
    AuditEntry,
    Experiment,
    PromptDraft,
    PromptState,
    PromptVersion,
    TestResults,
)
from gateway.core.promptfile import PromptFile
from gateway.errors import (
    ExperimentConflict,
    ExperimentNotFound,
    PromptNotFound,
    StateChanged,
    VersionConflict,
    VersionNotFound,
)
from gateway.files import ExperimentSpec
from gateway.stores import codec
from gateway.stores.base import Store

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PushResult:
    """What pushing one version did."""

    name: str
    version: str
    status: Literal["created", "unchanged"]
    source: str


class PromptRegistry:
    """Admin operations on a store: create, test results, promote, roll back, experiments."""

    def __init__(
        self,
        store: Store,
        *,
        threshold: float,
        clock: Clock = utc_now,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = store
        self.threshold = threshold
        self._clock = clock
        self._new_id = new_id

    async def create_version(self, draft: PromptDraft, *, actor: str) -> bool:
        """Create a version; False when it already exists with the same content."""
        change = await self.store.apply(
            draft.name,
            lambda state, _: plans.plan_create_version(
                state, draft, new_id=self._new_id(), actor=actor, now=self._clock()
            ),
        )
        return not change.is_empty

    async def push(self, files: Sequence[PromptFile], *, actor: str) -> list[PushResult]:
        """Create every new version in the files; refuse before writing if any would change one.

        Every file is checked against the store first, so a conflicting file leaves nothing
        half-pushed; then each version is created in its own atomic write.
        """
        for file in files:
            check_push(file, await self.store.prompt(file.name))
        results = []
        for file in files:
            for draft in file.drafts:
                created = await self.create_version(draft, actor=actor)
                status: Literal["created", "unchanged"] = "created" if created else "unchanged"
                results.append(PushResult(draft.name, draft.version, status, file.source))
        return results

    async def record_test_run(
        self, name: str, version: str, results: TestResults, *, actor: str
    ) -> None:
        """Store a test run's results; is_tested follows the promotion threshold."""
        await self.store.apply(
            name,
            lambda state, _: plans.plan_record_test_run(
                state, version, results, threshold=self.threshold, actor=actor, now=self._clock()
            ),
        )

    async def promote(
        self,
        name: str,
        version: str,
        *,
        actor: str,
        force: bool = False,
        expect_active: str | None = None,
    ) -> AuditEntry | None:
        """Make a version active; None when it already was.

        `expect_active`: the active version the caller saw; when another one is active now (and
        `version` is not), StateChanged (409) and nothing is written. Checked inside the store's
        atomic write, so two callers cannot both pass it on the same state.
        """

        def plan(state: PromptState, _: object) -> plans.Change:
            if state.active != version:
                plans.check_active(state, expect_active)
            return plans.plan_promote(
                state,
                version,
                threshold=self.threshold,
                force=force,
                actor=actor,
                now=self._clock(),
            )

        change = await self.store.apply(name, plan)
        return change.audit[0] if change.audit else None

    async def rollback(
        self,
        name: str,
        *,
        actor: str,
        expect_active: str | None = None,
        expect_target: str | None = None,
    ) -> AuditEntry:
        """Re-activate the version active before the current one.

        `expect_active` / `expect_target`: the active version the caller saw and the version it
        saw the rollback go to; when either differs now, StateChanged (409) and nothing is
        written (checked inside the store's atomic write), so a rollback submitted twice goes
        back one step, not two.
        """

        def plan(state: PromptState, _: object) -> plans.Change:
            if state.versions:
                plans.check_active(state, expect_active)
                plans.check_rollback_target(state, expect_target)
            return plans.plan_rollback(state, actor=actor, now=self._clock())

        change = await self.store.apply(name, plan)
        return change.audit[0]

    async def create_experiment(self, spec: ExperimentSpec, *, actor: str) -> Experiment:
        """Create and start an experiment (at `spec.start`, or now)."""
        now = self._clock()
        experiment = Experiment(
            id=spec.id,
            prompt_name=spec.prompt_name,
            control_version=spec.control_version,
            treatment_version=spec.treatment_version,
            traffic_split=spec.traffic_split,
            start=spec.start or now,
            end=spec.end,
            metric=spec.metric,
            status="running",
            created_at=now,
            created_by=actor,
        )
        plans.validate_name(spec.prompt_name)
        await self.store.apply(
            spec.prompt_name,
            lambda state, taken: plans.plan_create_experiment(
                state, experiment, taken_ids=taken, now=now
            ),
        )
        return experiment

    async def ensure_experiment(
        self, spec: ExperimentSpec, *, actor: str
    ) -> tuple[Experiment, Literal["created", "unchanged"]]:
        """Create the experiment a file describes unless it exists as described (idempotent)."""
        existing = await self.store.find_experiment(spec.id)
        if existing is None:
            return await self.create_experiment(spec, actor=actor), "created"
        same = (
            existing.prompt_name == spec.prompt_name
            and existing.control_version == spec.control_version
            and existing.treatment_version == spec.treatment_version
            and existing.traffic_split == spec.traffic_split
            and existing.metric == spec.metric
            and existing.end == spec.end
            and (spec.start is None or existing.start == spec.start)
        )
        if not same:
            raise ExperimentConflict(
                f"Experiment {spec.id!r} already exists with other settings; experiments are "
                "not edited in place. Stop it and create one with a new id."
            )
        return existing, "unchanged"

    async def stop_experiment(
        self, experiment_id: str, *, actor: str, expect_running: bool = False
    ) -> Experiment:
        """Stop an experiment; its prompt goes back to environment resolution. Stopping a
        stopped one changes nothing, or, with `expect_running` (the caller showed it running),
        raises StateChanged (409)."""
        found = await self.store.find_experiment(experiment_id)
        if found is None:
            raise ExperimentNotFound(f"Experiment {experiment_id!r} does not exist.", param="id")

        def plan(state: PromptState, _: object) -> plans.Change:
            current = next((e for e in state.experiments if e.id == experiment_id), None)
            if expect_running and current is not None and current.status != "running":
                raise StateChanged(
                    f"Experiment {experiment_id} is already stopped; nothing was changed.",
                    param="id",
                )
            return plans.plan_stop_experiment(state, experiment_id, actor=actor, now=self._clock())

        await self.store.apply(found.prompt_name, plan)
        stopped = await self.store.find_experiment(experiment_id)
        assert stopped is not None  # experiments are never deleted
        return stopped


def check_push(file: PromptFile, state: PromptState) -> None:
    """VersionConflict, naming the file, when pushing `file` would change a version `state`
    holds; versions stored with the same content, and new ones, pass.

    `PromptRegistry.push` checks every file with it before writing; the remote command line
    checks the server's state with it before sending any file, for the same all-or-nothing push.
    """
    for draft in file.drafts:
        existing = state.by_version.get(draft.version)
        if existing is not None and existing.content() != draft:
            raise VersionConflict(
                f"{file.source}: {draft.name}@{draft.version} is already released with "
                "different content; a released version never changes. "
                "Bump its version in the file to release the change."
            )


async def stored_prompt(store: Store, name: str) -> PromptState:
    """The prompt's state; PromptNotFound with the closest stored names when it has no version."""
    state = await store.prompt(name)
    if state.versions:
        return state
    raise unknown_prompt(name, (await store.snapshot()).prompts)


def prompt_summary(state: PromptState) -> dict[str, Any]:
    """A prompt's row as `gateway prompts list --json` and `GET /admin/prompts` show it."""
    return {
        "name": state.name,
        "versions": len(state.versions),
        "newest": state.newest.version if state.newest else None,
        "newest_tested": state.newest_tested.version if state.newest_tested else None,
        "active": state.active,
        "experiment": next((e.id for e in state.experiments if e.status == "running"), None),
    }


def activation_result(name: str, active: str | None, entry: AuditEntry | None) -> dict[str, Any]:
    """What a promotion or rollback did, as JSON: one shape for both, the CLI's and the API's.

    `entry` is the change's audit entry, None when nothing changed (the version was active).
    """
    return {
        "name": name,
        "active": active,
        "previous": (entry.before or {}).get("active") if entry else active,
        "changed": entry is not None,
        "forced": bool(entry and entry.forced),
        "audit": codec.audit_to_dict(entry) if entry else None,
    }


def did_you_mean(wanted: str, known: Iterable[str]) -> str:
    """` Did you mean: a, b?` with the closest of `known`, or nothing when none is close."""
    close = difflib.get_close_matches(wanted, sorted(set(known)), n=3, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def unknown_prompt(name: str, known: Iterable[str]) -> PromptNotFound:
    """`Prompt 'x' does not exist`, with the closest of the `known` names (or the first few)."""
    names = sorted(set(known))
    hint = did_you_mean(name, names) or (
        f" Known prompts: {', '.join(names[:10])}." if names else ""
    )
    return PromptNotFound(f"Prompt {name!r} does not exist.{hint}", param="name")


def existing_version(state: PromptState, version: str) -> PromptVersion:
    """The stored version; else VersionNotFound naming the known versions and the closest."""
    try:
        return plans.require_version(state, version)
    except VersionNotFound as exc:
        hint = did_you_mean(version, state.by_version)
        raise VersionNotFound(f"{exc.message}{hint}", param=exc.param) from None
