"""The registry's rules: validating drafts and planning every admin write as a pure function.

Each `plan_*` function takes the current `PromptState` of one prompt and returns the `Change` to
write, or raises without writing anything. Stores run a plan inside one transaction, so the rules
live here once and both backends apply them identically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from gateway.core.model import (
    CLIENT_SYSTEM,
    METRICS,
    ROLES,
    Adoption,
    AuditEntry,
    Experiment,
    PromptDraft,
    PromptState,
    PromptVersion,
    TestResults,
)
from gateway.core.rendering import Message, placeholders, unclosed_placeholder
from gateway.core.versions import parse_version
from gateway.errors import (
    ExperimentConflict,
    ExperimentNotFound,
    InvalidExperiment,
    InvalidPrompt,
    NothingToRollBack,
    PromotionRefused,
    StateChanged,
    VersionConflict,
    VersionNotFound,
)

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
EXPERIMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class Change:
    """What one admin operation writes, atomically. An empty change writes nothing."""

    versions: tuple[PromptVersion, ...] = ()
    """New versions, or versions whose status fields changed."""
    active: str | None = None
    history: tuple[str, ...] = ()
    activation_changed: bool = False
    experiments: tuple[Experiment, ...] = ()
    audit: tuple[AuditEntry, ...] = ()
    adoption: Adoption | None = None
    """A new adoption binding (PRODUCT §14); None leaves the stored one as it is."""

    @property
    def is_empty(self) -> bool:
        """True when the operation found nothing to do (e.g. pushing an unchanged version)."""
        return not (
            self.versions
            or self.activation_changed
            or self.experiments
            or self.audit
            or self.adoption
        )


def validate_name(name: object) -> str:
    """A prompt name: lower-case letters, digits, '.', '_' and '-', at most 128 characters."""
    if not isinstance(name, str) or NAME.fullmatch(name) is None:
        raise InvalidPrompt(
            f"Prompt name {name!r} is invalid: use lower-case letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters.",
            param="name",
        )
    return name


def make_draft(
    *,
    name: str,
    version: object,
    messages: Sequence[Message],
    variables: Sequence[str] | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    tags: Iterable[str] = (),
    client_system: object = "replace",
) -> PromptDraft:
    """Validate a prompt version's content; declared variables must match the placeholders.

    `client_system` is `replace` (the default) or `keep`; anything else is refused.
    """
    name = validate_name(name)
    if not isinstance(version, str):
        raise InvalidPrompt(f"Version of {name} must be a string like '1.2.0', not {version!r}.")
    parse_version(version)
    label = f"{name}@{version}"
    if not messages:
        raise InvalidPrompt(f"Prompt {label} has no messages.", param="messages")
    for message in messages:
        if message.role not in ROLES:
            raise InvalidPrompt(
                f"Prompt {label} has a message with role {message.role!r}; "
                f"use one of {', '.join(sorted(ROLES))}.",
                param="messages",
            )
        unclosed = unclosed_placeholder(message.content)
        if unclosed is not None:
            raise InvalidPrompt(
                f"Prompt {label} has a {message.role} message with an unclosed placeholder "
                f"at {unclosed!r}; write placeholders as {{{{name}}}}.",
                param="messages",
            )
    used = placeholders(messages)
    if variables is None:
        declared = used
    else:
        declared = tuple(variables)
        missing = [v for v in used if v not in declared]
        extra = [v for v in declared if v not in used]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"used but not declared: {', '.join(missing)}")
            if extra:
                problems.append(f"declared but not used: {', '.join(extra)}")
            raise InvalidPrompt(
                f"Variables of prompt {label} do not match its template ({'; '.join(problems)}).",
                param="variables",
            )
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise InvalidPrompt(
            f"max_tokens of {label} must be a positive integer, not {max_tokens!r}.",
            param="max_tokens",
        )
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise InvalidPrompt(
            f"temperature of {label} must be a number from 0 to 2, not {temperature!r}.",
            param="temperature",
        )
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidPrompt(f"model of {label} must be a non-empty string.", param="model")
    if client_system not in CLIENT_SYSTEM:
        raise InvalidPrompt(
            f"client_system of {label} must be 'replace' (the default: the prompt's messages "
            "replace the request's system messages) or 'keep' (they are kept after the "
            f"prompt's), not {client_system!r}.",
            param="client_system",
        )
    return PromptDraft(
        name=name,
        version=version,
        messages=tuple(messages),
        variables=declared,
        model=model,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
        tags=tuple(tags),
        client_system="keep" if client_system == "keep" else "replace",
    )


def plan_create_version(
    state: PromptState, draft: PromptDraft, *, new_id: str, actor: str, now: datetime
) -> Change:
    """Create the version; the same content again is a no-op, other content a VersionConflict."""
    existing = state.by_version.get(draft.version)
    if existing is not None:
        if existing.content() == draft:
            return Change()
        raise VersionConflict(
            f"Prompt {draft.name}@{draft.version} already exists with different content; "
            "a released version never changes. Bump the version to release a change.",
            param="version",
        )
    number = max((v.number for v in state.versions), default=0) + 1
    version = PromptVersion(
        id=new_id,
        name=draft.name,
        version=draft.version,
        number=number,
        messages=draft.messages,
        variables=draft.variables,
        model=draft.model,
        max_tokens=draft.max_tokens,
        temperature=draft.temperature,
        tags=draft.tags,
        created_at=now,
        created_by=actor,
        client_system=draft.client_system,
    )
    entry = AuditEntry(
        at=now,
        actor=actor,
        action="version.create",
        prompt_name=draft.name,
        version=draft.version,
        after={"id": new_id, "number": number},
    )
    return Change(versions=(version,), audit=(entry,))


def require_version(state: PromptState, version: str) -> PromptVersion:
    """The stored version, or VersionNotFound naming the versions that exist."""
    found = state.by_version.get(version)
    if found is None:
        if not state.versions:
            raise VersionNotFound(f"Prompt {state.name!r} does not exist.", param="name")
        known = ", ".join(v.version for v in state.versions)
        raise VersionNotFound(
            f"Prompt {state.name!r} has no version {version!r}. Known versions: {known}.",
            param="version",
        )
    return found


def plan_record_test_run(
    state: PromptState,
    version: str,
    results: TestResults,
    *,
    threshold: float,
    actor: str,
    now: datetime,
) -> Change:
    """Store a test run on the version; is_tested follows whether it reached the threshold. The
    audit entry's `before` holds the previous run's pass rate and total (None: none ran)."""
    current = require_version(state, version)
    previous = current.test_results
    passed = results.pass_rate >= threshold
    updated = replace(current, is_tested=passed, test_results=results)
    entry = AuditEntry(
        at=now,
        actor=actor,
        action="version.test",
        prompt_name=state.name,
        version=version,
        before={
            "is_tested": current.is_tested,
            "pass_rate": previous.pass_rate if previous else None,
            "total": previous.total if previous else None,
        },
        after={"is_tested": passed, "pass_rate": results.pass_rate, "total": results.total},
    )
    return Change(versions=(updated,), audit=(entry,))


def plan_promote(
    state: PromptState,
    version: str,
    *,
    threshold: float,
    force: bool,
    actor: str,
    now: datetime,
) -> Change:
    """Make `version` active when its last test run reached the threshold (or when forced)."""
    target = require_version(state, version)
    if state.active == version:
        return Change()
    if not force:
        results = target.test_results
        if results is None:
            raise PromotionRefused(
                f"{target.label} has no test run, and promotion needs a pass rate of at least "
                f"{threshold:.0%}. Run: gateway prompts test {state.name} --version {version} "
                '(or force it: --force, or "force": true over the admin API).',
            )
        if results.pass_rate < threshold:
            raise PromotionRefused(
                f"{target.label} passed {results.passed} of {results.total} tests "
                f"(pass rate {results.pass_rate:.0%}), under the promotion threshold of "
                f'{threshold:.0%}. Fix the failures, or force it: --force, or "force": true over '
                "the admin API.",
            )
    history = (*state.history, state.active) if state.active else state.history
    entry = AuditEntry(
        at=now,
        actor=actor,
        action="version.promote",
        prompt_name=state.name,
        version=version,
        before={"active": state.active},
        after={"active": version},
        forced=force,
        detail=_pass_rate_detail(target),
    )
    return Change(active=version, history=history, activation_changed=True, audit=(entry,))


def check_active(state: PromptState, expected: str | None) -> None:
    """StateChanged unless `state`'s active version is `expected` ("": none is active; None:
    not checked).

    A caller that acts on what it showed (the console's forms) passes the active version it
    showed, so an action submitted twice, or after another operator's, changes nothing."""
    if expected is None or (state.active or "") == expected:
        return
    if not expected:
        message = f"{state.name} has an active version now, {state.active}"
    else:
        message = f"{expected} is no longer active: {state.active or 'no version'} is"
    raise StateChanged(f"{message}; nothing was changed.", param="expected_active")


def check_rollback_target(state: PromptState, expected: str | None) -> None:
    """StateChanged unless a rollback of `state` now would re-activate `expected` (None: not
    checked)."""
    if expected is None:
        return
    target = state.history[-1] if state.history else None
    if target != expected:
        now_goes = f"goes to {target}" if target else "has no earlier version to go to"
        raise StateChanged(
            f"A rollback of {state.name} now {now_goes}, not {expected}; nothing was changed.",
            param="expected_target",
        )


def plan_rollback(state: PromptState, *, actor: str, now: datetime) -> Change:
    """Re-activate the version that was active before the current one."""
    if not state.versions:
        raise VersionNotFound(f"Prompt {state.name!r} does not exist.", param="name")
    if not state.history:
        raise NothingToRollBack(
            f"Prompt {state.name!r} has no earlier active version to roll back to "
            f"(active: {state.active or 'none'}).",
        )
    previous = state.history[-1]
    entry = AuditEntry(
        at=now,
        actor=actor,
        action="version.rollback",
        prompt_name=state.name,
        version=previous,
        before={"active": state.active},
        after={"active": previous},
    )
    return Change(
        active=previous, history=state.history[:-1], activation_changed=True, audit=(entry,)
    )


def plan_create_experiment(
    state: PromptState,
    experiment: Experiment,
    *,
    taken_ids: Iterable[str],
    now: datetime,
) -> Change:
    """Create an experiment; both versions must exist and no other may run on the prompt then."""
    if EXPERIMENT_ID.fullmatch(experiment.id) is None:
        raise InvalidExperiment(
            f"Experiment id {experiment.id!r} is invalid: use letters, digits, '.', '_' and '-'.",
            param="id",
        )
    if experiment.id in set(taken_ids):
        raise ExperimentConflict(f"Experiment {experiment.id!r} already exists.", param="id")
    require_version(state, experiment.control_version)
    require_version(state, experiment.treatment_version)
    if experiment.control_version == experiment.treatment_version:
        raise InvalidExperiment(
            f"Experiment {experiment.id!r} compares {experiment.control_version} with itself; "
            "control and treatment must be different versions.",
        )
    if not 0 <= experiment.traffic_split <= 1:
        raise InvalidExperiment(
            f"traffic_split must be between 0 and 1, not {experiment.traffic_split}.",
            param="traffic_split",
        )
    if experiment.end is not None and experiment.end <= experiment.start:
        raise InvalidExperiment(
            f"Experiment {experiment.id!r} ends ({experiment.end.isoformat()}) before it starts "
            f"({experiment.start.isoformat()}).",
            param="end",
        )
    if experiment.metric not in METRICS:
        raise InvalidExperiment(
            f"Metric {experiment.metric!r} is unknown; use one of {', '.join(METRICS)}.",
            param="metric",
        )
    for other in state.experiments:
        if other.status == "running" and _overlaps(other, experiment, now):
            raise ExperimentConflict(
                f"Experiment {other.id!r} is already running on prompt {state.name!r}; "
                f"stop it first with: gateway experiments stop {other.id}",
            )
    entry = AuditEntry(
        at=now,
        actor=experiment.created_by,
        action="experiment.create",
        prompt_name=state.name,
        experiment_id=experiment.id,
        after=_experiment_summary(experiment),
    )
    return Change(experiments=(experiment,), audit=(entry,))


def plan_stop_experiment(
    state: PromptState, experiment_id: str, *, actor: str, now: datetime
) -> Change:
    """Stop a running experiment; stopping a stopped one is a no-op."""
    experiment = next((e for e in state.experiments if e.id == experiment_id), None)
    if experiment is None:
        raise ExperimentNotFound(f"Experiment {experiment_id!r} does not exist.", param="id")
    if experiment.status == "stopped":
        return Change()
    stopped = replace(experiment, status="stopped", stopped_at=now)
    entry = AuditEntry(
        at=now,
        actor=actor,
        action="experiment.stop",
        prompt_name=state.name,
        experiment_id=experiment_id,
        before={"status": "running"},
        after={"status": "stopped"},
    )
    return Change(experiments=(stopped,), audit=(entry,))


def plan_conclude_experiment(
    state: PromptState,
    experiment_id: str,
    *,
    promote: bool,
    reason: str,
    threshold: float,
    force: bool,
    actor: str,
    now: datetime,
) -> Change:
    """Stop an experiment and, when `promote`, make its treatment active: one audited change.

    The promotion goes through the gate of `plan_promote` (refused under the threshold unless
    `force`); when it is refused nothing is written, the experiment included. `reason` (the
    results' reason) is kept in the audit entry.
    """
    experiment = next((e for e in state.experiments if e.id == experiment_id), None)
    if experiment is None:
        raise ExperimentNotFound(f"Experiment {experiment_id!r} does not exist.", param="id")
    if experiment.status != "running":
        raise ExperimentConflict(
            f"Experiment {experiment_id!r} is already stopped, so there is nothing to conclude. "
            f"To make its treatment active, promote it: gateway prompts promote "
            f"{state.name} {experiment.treatment_version}",
            param="id",
        )
    stopped = replace(experiment, status="stopped", stopped_at=now)
    promotion = Change()
    if promote:
        promotion = plan_promote(
            state,
            experiment.treatment_version,
            threshold=threshold,
            force=force,
            actor=actor,
            now=now,
        )
    active = promotion.active if promotion.activation_changed else state.active
    entry = AuditEntry(
        at=now,
        actor=actor,
        action="experiment.conclude",
        prompt_name=state.name,
        version=experiment.treatment_version if promotion.activation_changed else None,
        experiment_id=experiment_id,
        before={"status": experiment.status, "active": state.active},
        after={"status": "stopped", "active": active},
        forced=force and promotion.activation_changed,
        detail=reason,
    )
    return Change(
        active=promotion.active,
        history=promotion.history,
        activation_changed=promotion.activation_changed,
        experiments=(stopped,),
        audit=(entry,),
    )


def _overlaps(running: Experiment, new: Experiment, now: datetime) -> bool:
    """Two experiments overlap when their [start, end) windows intersect; no end is open-ended."""
    running_ended = running.end is not None and running.end <= now
    if running_ended:
        return False
    starts_before_other_ends = new.end is None or running.start < new.end
    ends_after_other_starts = running.end is None or new.start < running.end
    return starts_before_other_ends and ends_after_other_starts


def _experiment_summary(experiment: Experiment) -> dict[str, Any]:
    return {
        "control_version": experiment.control_version,
        "treatment_version": experiment.treatment_version,
        "traffic_split": experiment.traffic_split,
        "start": experiment.start.isoformat(),
        "end": experiment.end.isoformat() if experiment.end else None,
        "metric": experiment.metric,
    }


def _pass_rate_detail(version: PromptVersion) -> str:
    results = version.test_results
    if results is None:
        return "no test run"
    return f"pass rate {results.pass_rate:.0%} ({results.passed}/{results.total})"


def check_restored(state: PromptState, *, taken_ids: Iterable[str], now: datetime) -> None:
    """Check one prompt of an export (`gateway store restore`) as push, promote and
    `experiments create` would have checked it when it was written; raise the error they raise
    (a VersionConflict for a version listed twice), naming the version or experiment.

    Each version is validated as a draft (name, semver, roles, template and variables, model
    parameters) and replayed in number order; the activation and its history must name versions
    the prompt holds; each experiment goes through `plan_create_experiment` against the versions,
    the experiment ids taken so far (`taken_ids`, grown with this prompt's) and, when it runs,
    the running experiments before it; an adoption must name a version.
    """
    ordered: list[PromptVersion] = []
    seen: set[str] = set()
    numbers: set[int] = set()
    for version in sorted(state.versions, key=lambda v: v.number):
        if version.name != state.name:
            raise InvalidPrompt(
                f"Version {version.version} of prompt {state.name!r} is named {version.name!r}.",
                param="name",
            )
        make_draft(
            name=version.name,
            version=version.version,
            messages=version.messages,
            variables=version.variables,
            model=version.model,
            max_tokens=version.max_tokens,
            temperature=version.temperature,
            tags=version.tags,
            client_system=version.client_system,
        )
        if version.version in seen:
            raise VersionConflict(
                f"Prompt {version.label} is listed twice; a version exists once.", param="version"
            )
        if isinstance(version.number, bool) or not isinstance(version.number, int):
            raise InvalidPrompt(f"{version.label} has number {version.number!r}, not an integer.")
        if version.number in numbers:
            raise VersionConflict(
                f"{version.label} has number {version.number}, which another version of "
                f"{state.name!r} has too.",
                param="number",
            )
        numbers.add(version.number)
        seen.add(version.version)
        ordered.append(version)
    # Built once: a PromptState indexes its versions when made, so one per version replayed was
    # quadratic in the prompt's versions.
    replayed = PromptState(state.name, versions=tuple(ordered))
    for label, named in [("active", state.active), *(("history", v) for v in state.history)]:
        if named is not None:
            _require_named(replayed, named, f"Its activation ({label})")
    if state.adoption is not None:
        _require_named(replayed, state.adoption.version, "Its adoption")
    taken = set(taken_ids)
    running: tuple[Experiment, ...] = ()
    for experiment in state.experiments:
        where = f"Experiment {experiment.id!r}"
        if experiment.prompt_name != state.name:
            raise InvalidExperiment(
                f"{where} is listed under prompt {state.name!r} but names prompt "
                f"{experiment.prompt_name!r}.",
                param="prompt_name",
            )
        split = experiment.traffic_split
        if isinstance(split, bool) or not isinstance(split, int | float):
            raise InvalidExperiment(
                f"{where}: traffic_split must be a number between 0 and 1, not {split!r}.",
                param="traffic_split",
            )
        if experiment.status not in ("running", "stopped"):
            raise InvalidExperiment(
                f"{where}: status must be 'running' or 'stopped', not {experiment.status!r}.",
                param="status",
            )
        is_running = experiment.status == "running"
        # A stopped experiment may have overlapped one that ran after it; only running ones
        # must not overlap (the rule of `experiments create`).
        against = replace(replayed, experiments=running if is_running else ())
        try:
            plan_create_experiment(against, experiment, taken_ids=taken, now=now)
        except (VersionNotFound, InvalidExperiment, ExperimentConflict) as exc:
            raise type(exc)(f"{where}: {exc}", param=exc.param) from exc
        taken.add(experiment.id)
        if is_running:
            running = (*running, experiment)


def _require_named(state: PromptState, version: str, what: str) -> None:
    if version not in state.by_version:
        known = ", ".join(v.version for v in state.versions) or "none"
        raise VersionNotFound(
            f"{what} names version {version!r} of prompt {state.name!r}, which it does not hold "
            f"(versions: {known}).",
            param="version",
        )
