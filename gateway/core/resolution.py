"""Which version of a prompt serves a request: pinned, override, experiment, then environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.core.experiments import Assignment, assign_variant
from gateway.core.model import (
    Environment,
    Experiment,
    PromptVersion,
    RegistrySnapshot,
    Resolution,
    Variant,
)
from gateway.errors import NoServableVersion, PromptNotFound


@dataclass(frozen=True, slots=True)
class Resolved:
    """The version chosen for a request, and why."""

    version: PromptVersion
    variant: Variant
    resolution: Resolution
    experiment: Experiment | None = None
    assignment: Assignment | None = None


@dataclass(frozen=True, slots=True)
class Overrides:
    """Per-environment version overrides: the process's (PROMPT_OVERRIDES) win over the config's."""

    process: Mapping[str, str]
    by_environment: Mapping[str, Mapping[str, str]]

    def seen_by(self, environment: str, own: str) -> Overrides:
        """The overrides a gateway serving `environment` applies, as far as one serving `own`
        knows them: the config's per-environment ones, and this process's PROMPT_OVERRIDES only
        when `environment` is its own (another environment's processes have their own)."""
        return self if environment == own else Overrides({}, self.by_environment)

    def lookup(self, name: str, environment: str) -> tuple[str, str] | None:
        """The overriding version for `name` in `environment` and where it came from, if any."""
        if name in self.process:
            return self.process[name], "PROMPT_OVERRIDES"
        configured = self.by_environment.get(environment, {})
        if name in configured:
            return configured[name], f"environments.{environment}.overrides"
        return None


NO_OVERRIDES = Overrides({}, {})


def dangling_overrides(
    snapshot: RegistrySnapshot, overrides: Overrides, environment: str
) -> list[str]:
    """One sentence for each override in force in `environment` whose prompt or version the
    snapshot lacks (every call of that prompt would be a 404), sorted by prompt name."""
    in_force = {**overrides.by_environment.get(environment, {}), **overrides.process}
    problems = []
    for name, wanted in sorted(in_force.items()):
        _, source = overrides.lookup(name, environment) or (wanted, "")
        state = snapshot.prompts.get(name)
        if state is None or not state.versions:
            problems.append(f"{source} sets prompt {name!r} to {wanted!r}; no such prompt")
        elif wanted not in state.by_version:
            known = ", ".join(v.version for v in state.versions)
            problems.append(
                f"{source} sets prompt {name!r} to {wanted!r}; no such version (known: {known})"
            )
    return problems


def resolve(
    snapshot: RegistrySnapshot,
    name: str,
    *,
    environment: Environment,
    pinned: str | None = None,
    overrides: Overrides = NO_OVERRIDES,
    user_key: str | None = None,
    request_id: str = "",
    now: datetime,
) -> Resolved:
    """Choose the version of `name` that serves this request (PRODUCT §4), or raise a 404."""
    state = snapshot.prompts.get(name)
    if state is None or not state.versions:
        override = overrides.lookup(name, environment)
        pointing = (
            f" ({override[1]} overrides it to {override[0]!r}, which points nowhere.)"
            if override
            else ""
        )
        raise PromptNotFound(
            f"Prompt {name!r} does not exist. Push it with: gateway prompts push config/prompts"
            + pointing,
            param="prompt",
        )
    if pinned is not None:
        version = state.by_version.get(pinned)
        if version is None:
            raise NoServableVersion(
                f"Prompt {name!r} has no version {pinned!r}. "
                f"Known versions: {', '.join(v.version for v in state.versions)}.",
                param="prompt.version",
            )
        return Resolved(version, "none", "pinned")

    override = overrides.lookup(name, environment)
    if override is not None:
        wanted, source = override
        version = state.by_version.get(wanted)
        if version is None:
            raise NoServableVersion(
                f"Prompt {name!r} is overridden to version {wanted!r} by {source}, which "
                "points nowhere: no such version. Fix the override or push that version.",
            )
        return Resolved(version, "none", "override")

    experiment = state.experiment_running(now)
    if experiment is not None:
        choice = assign_variant(experiment, user_key, request_id)
        version = state.by_version.get(choice.version)
        if version is not None:
            return Resolved(version, choice.variant, "experiment", experiment, choice.assignment)

    chosen = _by_environment(state.active_version, state.newest_tested, state.newest, environment)
    if chosen is None:
        hint = {
            "production": f"Promote one with: gateway prompts promote {name} <version>",
            "staging": (
                "Its tested versions all failed their tests (under the promotion threshold); "
                f"fix one and test it again: gateway prompts test {name} --version <version>"
                if any(v.test_results is not None for v in state.versions)
                else f"Test one with: gateway prompts test {name}"
            ),
            "development": "Push a version first.",
        }[environment]
        raise NoServableVersion(f"Prompt {name!r} has no version to serve in {environment}. {hint}")
    return Resolved(chosen, "none", "environment")


def _by_environment(
    active: PromptVersion | None,
    newest_tested: PromptVersion | None,
    newest: PromptVersion | None,
    environment: Environment,
) -> PromptVersion | None:
    if environment == "production":
        return active
    if environment == "staging":
        return newest_tested
    return newest
