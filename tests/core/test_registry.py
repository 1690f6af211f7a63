"""Registry rules as pure plans: drafts, immutability, promotion gate, rollback, experiments."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from gateway.core import registry as plans
from gateway.core.model import PromptState
from gateway.core.rendering import Message
from gateway.errors import (
    ExperimentConflict,
    InvalidExperiment,
    InvalidPrompt,
    NothingToRollBack,
    PromotionRefused,
    VersionConflict,
    VersionNotFound,
)
from tests.factories import T0, experiment, version


def draft(ver: str = "1.0.0", content: str = "Hi {{company}}", **kw: object):  # type: ignore[no-untyped-def]
    return plans.make_draft(
        name="support-agent", version=ver, messages=[Message("system", content)], **kw
    )  # type: ignore[arg-type]


def apply(state: PromptState, change: plans.Change) -> PromptState:
    """What a store does with a change, in memory."""
    versions = {v.version: v for v in state.versions}
    versions.update({v.version: v for v in change.versions})
    experiments = {e.id: e for e in state.experiments}
    experiments.update({e.id: e for e in change.experiments})
    active, history = (
        (change.active, change.history)
        if change.activation_changed
        else (state.active, state.history)
    )
    return PromptState(
        state.name,
        tuple(sorted(versions.values(), key=lambda v: v.number)),
        active,
        history,
        tuple(experiments.values()),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Support Agent"}, "Prompt name 'Support Agent' is invalid"),
        ({"name": "-x"}, "is invalid"),
        ({"version": "1.0"}, "not a semantic version"),
        ({"variables": ["company", "tone"]}, "declared but not used: tone"),
        ({"variables": []}, "used but not declared: company"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"messages": [Message("robot", "x")]}, "role 'robot'"),
        ({"messages": []}, "has no messages"),
        ({"messages": [Message("system", "{{#broken")]}, "unclosed placeholder at '{{#broken'"),
        ({"messages": [Message("user", "Hi {{company}} {{ tone")]}, "user message with an uncl"),
    ],
)
def test_invalid_drafts_are_refused_naming_the_field(
    kwargs: dict[str, object], message: str
) -> None:
    """Each bad field gets a message naming it and the value."""
    args: dict[str, object] = {
        "name": "support-agent",
        "version": "1.0.0",
        "messages": [Message("system", "Hi {{company}}")],
    }
    args.update(kwargs)
    with pytest.raises(InvalidPrompt, match=message):
        plans.make_draft(**args)  # type: ignore[arg-type]


def test_variables_are_derived_when_not_declared() -> None:
    """Without a declared list the variables are the template's placeholders."""
    assert draft(content="{{a}} {{b}} {{a}}").variables == ("a", "b")


def test_create_numbers_versions_in_creation_order() -> None:
    """The integer number counts creations within the name, whatever the semver."""
    state = PromptState("support-agent")
    state = apply(
        state, plans.plan_create_version(state, draft("2.0.0"), new_id="a", actor="t", now=T0)
    )
    state = apply(
        state, plans.plan_create_version(state, draft("1.0.0"), new_id="b", actor="t", now=T0)
    )
    assert [(v.version, v.number, v.id) for v in state.versions] == [
        ("2.0.0", 1, "a"),
        ("1.0.0", 2, "b"),
    ]


def test_same_content_again_is_a_no_op() -> None:
    """Creating an existing version with identical content writes nothing, not even audit."""
    state = PromptState("support-agent")
    state = apply(state, plans.plan_create_version(state, draft(), new_id="a", actor="t", now=T0))
    assert plans.plan_create_version(state, draft(), new_id="b", actor="t", now=T0).is_empty


def test_other_content_for_an_existing_version_is_a_conflict() -> None:
    """A released version never changes: other content under the same version is a 409."""
    state = PromptState("support-agent")
    state = apply(state, plans.plan_create_version(state, draft(), new_id="a", actor="t", now=T0))
    with pytest.raises(VersionConflict) as caught:
        plans.plan_create_version(
            state, draft(content="Bye {{company}}"), new_id="b", actor="t", now=T0
        )
    assert caught.value.status == 409


TESTED = PromptState(
    "support-agent",
    (
        version(ver="1.0.0", number=1, pass_rate=1.0, tested=True),
        version(ver="1.1.0", number=2, pass_rate=0.8),
        version(ver="1.2.0", number=3),
    ),
)


def test_promotion_needs_the_threshold() -> None:
    """A pass rate under the threshold refuses promotion and says the rate."""
    with pytest.raises(PromotionRefused, match="pass rate 80%"):
        plans.plan_promote(TESTED, "1.1.0", threshold=0.9, force=False, actor="t", now=T0)


def test_promotion_without_a_test_run_is_refused() -> None:
    """A version never tested cannot be promoted without --force."""
    with pytest.raises(PromotionRefused, match="no test run"):
        plans.plan_promote(TESTED, "1.2.0", threshold=0.9, force=False, actor="t", now=T0)


def test_forced_promotion_is_audited_as_forced() -> None:
    """--force skips the gate and the audit entry says so."""
    change = plans.plan_promote(TESTED, "1.1.0", threshold=0.9, force=True, actor="t", now=T0)
    assert change.active == "1.1.0"
    assert change.audit[0].forced is True


def test_promote_then_rollback_walks_back_through_history() -> None:
    """Rollback re-activates the version active before the current one, then the one before it."""
    state = TESTED
    for ver in ("1.0.0", "1.1.0", "1.2.0"):
        state = apply(
            state, plans.plan_promote(state, ver, threshold=0.9, force=True, actor="t", now=T0)
        )
    assert (state.active, state.history) == ("1.2.0", ("1.0.0", "1.1.0"))
    state = apply(state, plans.plan_rollback(state, actor="t", now=T0))
    assert state.active == "1.1.0"
    state = apply(state, plans.plan_rollback(state, actor="t", now=T0))
    assert state.active == "1.0.0"
    with pytest.raises(NothingToRollBack):
        plans.plan_rollback(state, actor="t", now=T0)


def test_promoting_the_active_version_is_a_no_op() -> None:
    """Promoting what is already active changes nothing."""
    state = apply(
        TESTED, plans.plan_promote(TESTED, "1.0.0", threshold=0.9, force=False, actor="t", now=T0)
    )
    assert plans.plan_promote(
        state, "1.0.0", threshold=0.9, force=False, actor="t", now=T0
    ).is_empty


def test_promoting_an_unknown_version_lists_the_known_ones() -> None:
    """A version that does not exist is a 404 naming the versions that do."""
    with pytest.raises(VersionNotFound, match=re.escape("1.0.0, 1.1.0, 1.2.0")):
        plans.plan_promote(TESTED, "7.0.0", threshold=0.9, force=True, actor="t", now=T0)


def test_test_run_sets_is_tested_by_the_threshold() -> None:
    """A run at or above the threshold marks the version tested; below it clears the mark."""
    from gateway.core.model import TestResults

    good = TestResults(total=10, passed=9, failed=1, pass_rate=0.9)
    bad = TestResults(total=10, passed=5, failed=5, pass_rate=0.5)
    state = apply(
        TESTED, plans.plan_record_test_run(TESTED, "1.2.0", good, threshold=0.9, actor="t", now=T0)
    )
    assert state.by_version["1.2.0"].is_tested
    again = plans.plan_record_test_run(state, "1.2.0", bad, threshold=0.9, actor="t", now=T0)
    state = apply(state, again)
    assert not state.by_version["1.2.0"].is_tested
    assert state.by_version["1.2.0"].test_results == bad
    # The audit's before holds the run it replaced, not only the mark.
    assert again.audit[0].before == {"is_tested": True, "pass_rate": 0.9, "total": 10}
    assert again.audit[0].after == {"is_tested": False, "pass_rate": 0.5, "total": 10}


def test_only_one_experiment_runs_per_prompt() -> None:
    """A second overlapping experiment on the same prompt is refused until the first stops."""
    first = experiment(id="a", control="1.0.0", treatment="1.1.0")
    state = apply(TESTED, plans.plan_create_experiment(TESTED, first, taken_ids=(), now=T0))
    second = experiment(id="b", control="1.0.0", treatment="1.2.0")
    with pytest.raises(ExperimentConflict, match="already running"):
        plans.plan_create_experiment(state, second, taken_ids={"a"}, now=T0)
    state = apply(state, plans.plan_stop_experiment(state, "a", actor="t", now=T0))
    assert plans.plan_create_experiment(state, second, taken_ids={"a"}, now=T0).experiments


def test_experiment_after_an_ended_one_is_allowed() -> None:
    """An experiment whose window has passed does not block a new one."""
    old = experiment(id="a", end=T0 + timedelta(days=1))
    state = apply(TESTED, plans.plan_create_experiment(TESTED, old, taken_ids=(), now=T0))
    later = T0 + timedelta(days=2)
    new = experiment(id="b", start=later)
    assert plans.plan_create_experiment(state, new, taken_ids={"a"}, now=later).experiments


@pytest.mark.parametrize(
    ("exp", "error", "message"),
    [
        (experiment(treatment="9.0.0"), VersionNotFound, "no version '9.0.0'"),
        (experiment(treatment="1.0.0"), InvalidExperiment, "with itself"),
        (experiment(split=1.5), InvalidExperiment, "traffic_split"),
        (experiment(end=T0), InvalidExperiment, "before it starts"),
        (experiment(id="taken"), ExperimentConflict, "already exists"),
        (experiment(id="bad id!"), InvalidExperiment, "Experiment id"),
    ],
)
def test_invalid_experiments_are_refused(exp: object, error: type[Exception], message: str) -> None:
    """Each invalid experiment is refused with a message naming the problem."""
    with pytest.raises(error, match=message):
        plans.plan_create_experiment(TESTED, exp, taken_ids={"taken"}, now=T0)  # type: ignore[arg-type]


def _running(treatment: str) -> PromptState:
    state = PromptState(
        TESTED.name,
        TESTED.versions,
        "1.0.0",
        (),
        (experiment(control="1.0.0", treatment=treatment),),
    )
    return state


def test_concluding_with_a_winner_stops_and_promotes_in_one_audited_change() -> None:
    """promote: the experiment stops and the treatment becomes active; one entry says both."""
    state = _running("1.1.0")
    change = plans.plan_conclude_experiment(
        state,
        "exp-1",
        promote=True,
        reason="lifts it",
        threshold=0.8,
        force=False,
        actor="ops",
        now=T0,
    )
    after = apply(state, change)
    assert after.active == "1.1.0" and after.history == ("1.0.0",)
    assert after.experiments[0].status == "stopped"
    (entry,) = change.audit
    assert (entry.action, entry.experiment_id, entry.version, entry.detail) == (
        "experiment.conclude",
        "exp-1",
        "1.1.0",
        "lifts it",
    )
    assert entry.before == {"status": "running", "active": "1.0.0"}
    assert entry.after == {"status": "stopped", "active": "1.1.0"}


def test_concluding_without_a_winner_only_stops() -> None:
    """keep_control or keep_running: stopped, nothing promoted."""
    state = _running("1.1.0")
    change = plans.plan_conclude_experiment(
        state,
        "exp-1",
        promote=False,
        reason="no difference",
        threshold=0.9,
        force=False,
        actor="ops",
        now=T0,
    )
    after = apply(state, change)
    assert after.active == "1.0.0" and after.experiments[0].status == "stopped"
    assert change.audit[0].after == {"status": "stopped", "active": "1.0.0"}


def test_concluding_is_refused_whole_under_the_gate() -> None:
    """An untested treatment is not promoted, and the experiment is not stopped either."""
    with pytest.raises(PromotionRefused, match="no test run"):
        plans.plan_conclude_experiment(
            _running("1.2.0"),
            "exp-1",
            promote=True,
            reason="r",
            threshold=0.9,
            force=False,
            actor="ops",
            now=T0,
        )
    forced = plans.plan_conclude_experiment(
        _running("1.2.0"),
        "exp-1",
        promote=True,
        reason="r",
        threshold=0.9,
        force=True,
        actor="ops",
        now=T0,
    )
    assert forced.active == "1.2.0" and forced.audit[0].forced is True


def test_concluding_a_stopped_experiment_is_refused() -> None:
    """A stopped experiment is not concluded again: no audit entry, no second promotion."""
    state = _running("1.1.0")
    stopped = apply(
        state,
        plans.plan_conclude_experiment(
            state,
            "exp-1",
            promote=False,
            reason="r",
            threshold=0.9,
            force=False,
            actor="ops",
            now=T0,
        ),
    )
    with pytest.raises(ExperimentConflict, match="already stopped"):
        plans.plan_conclude_experiment(
            stopped,
            "exp-1",
            promote=True,
            reason="r",
            threshold=0.9,
            force=True,
            actor="ops",
            now=T0,
        )


def test_closed_braces_that_are_not_placeholders_are_text() -> None:
    """Only an unclosed `{{` is refused: closed braces that name no variable stay literal text."""
    made = draft(content='JSON like {"a": {"b": 1}} and {{ not-a-var }}, for {{company}}')
    assert made.variables == ("company",)


def test_a_consistent_export_passes_the_restore_check() -> None:
    """Versions, an activation with history, a stopped experiment listed after a running one
    that overlaps it: what the registry's own commands write passes."""
    state = PromptState(
        "support-agent",
        (version(), version(ver="1.1.0", number=2)),
        "1.1.0",
        ("1.0.0",),
        (
            experiment(id="now"),
            experiment(id="before", status="stopped", control="1.1.0", treatment="1.0.0"),
        ),
    )
    plans.check_restored(state, taken_ids={"elsewhere"}, now=T0)


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        (
            PromptState("support-agent", (version(), version(ver="1.0.0", number=2))),
            VersionConflict,
            "support-agent@1.0.0 is listed twice",
        ),
        (
            PromptState("support-agent", (version(), version(ver="1.1.0", number=1))),
            VersionConflict,
            "support-agent@1.1.0 has number 1, which another version",
        ),
        (
            PromptState("support-agent", (version(),), "1.0.0", ("0.9.0",)),
            VersionNotFound,
            r"Its activation \(history\) names version '0.9.0'",
        ),
        (
            PromptState("support-agent", (version(),), experiments=(experiment(),)),
            VersionNotFound,
            "Experiment 'exp-1': Prompt 'support-agent' has no version '1.1.0'",
        ),
        (
            PromptState(
                "support-agent",
                (version(), version(ver="1.1.0", number=2)),
                experiments=(experiment(), experiment(id="exp-2")),
            ),
            ExperimentConflict,
            "Experiment 'exp-2': Experiment 'exp-1' is already running",
        ),
        (
            PromptState(
                "support-agent",
                (version(), version(ver="1.1.0", number=2)),
                experiments=(experiment(id="taken"),),
            ),
            ExperimentConflict,
            "Experiment 'taken' already exists",
        ),
        (
            PromptState("other", (version(),)),
            InvalidPrompt,
            "Version 1.0.0 of prompt 'other' is named 'support-agent'",
        ),
    ],
)
def test_an_inconsistent_export_fails_the_restore_check(
    state: PromptState, error: type[Exception], message: str
) -> None:
    """What no command of the registry could have written is refused, naming the entry."""
    with pytest.raises(error, match=message):
        plans.check_restored(state, taken_ids={"taken"}, now=T0)
