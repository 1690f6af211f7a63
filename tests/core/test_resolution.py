"""Resolution (PRODUCT §4): pinned, override, experiment, environment, and the two 404s."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from gateway.core.model import Environment, PromptState
from gateway.core.resolution import Overrides, dangling_overrides, resolve
from gateway.errors import NoServableVersion, PromptNotFound
from tests.factories import T0, experiment, snapshot, version

NOW = T0 + timedelta(days=1)

# 1.0.0 active in production, 1.1.0 tested, 1.2.0-rc.1 a draft, 1.2.0 an untested draft.
STATE = PromptState(
    name="support-agent",
    versions=(
        version(ver="1.0.0", number=1, active=True, tested=True),
        version(ver="1.1.0", number=2, tested=True),
        version(ver="1.2.0", number=4),
        version(ver="1.2.0-rc.1", number=3),
    ),
    active="1.0.0",
)
SNAP = snapshot(STATE)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [("production", "1.0.0"), ("staging", "1.1.0"), ("development", "1.2.0")],
)
def test_environment_picks_active_newest_tested_or_newest(
    environment: Environment, expected: str
) -> None:
    """Production serves the active version, staging the newest tested, development the newest."""
    got = resolve(SNAP, "support-agent", environment=environment, now=NOW)
    assert (got.version.version, got.resolution, got.variant) == (expected, "environment", "none")


def test_newest_is_by_semver_not_creation_order() -> None:
    """1.2.0 is newer than 1.2.0-rc.1 even though the release candidate was created later."""
    state = PromptState(
        "p", (version("p", "1.2.0", number=1), version("p", "1.2.0-rc.1", number=2))
    )
    got = resolve(snapshot(state), "p", environment="development", now=NOW)
    assert got.version.version == "1.2.0"


def test_pinned_version_wins_over_everything() -> None:
    """A pinned version bypasses overrides, experiments and environment."""
    state = PromptState(
        STATE.name,
        STATE.versions,
        STATE.active,
        experiments=(experiment(control="1.0.0", treatment="1.1.0", split=1.0),),
    )
    overrides = Overrides({"support-agent": "1.1.0"}, {})
    got = resolve(
        snapshot(state),
        "support-agent",
        environment="production",
        pinned="1.2.0-rc.1",
        overrides=overrides,
        user_key="u",
        now=NOW,
    )
    assert (got.version.version, got.resolution, got.variant) == ("1.2.0-rc.1", "pinned", "none")


def test_process_override_beats_config_override() -> None:
    """PROMPT_OVERRIDES is consulted before environments.<env>.overrides."""
    overrides = Overrides({"support-agent": "1.1.0"}, {"production": {"support-agent": "1.2.0"}})
    got = resolve(SNAP, "support-agent", environment="production", overrides=overrides, now=NOW)
    assert (got.version.version, got.resolution) == ("1.1.0", "override")


def test_config_override_applies_only_to_its_environment() -> None:
    """An override for staging does not touch production."""
    overrides = Overrides({}, {"staging": {"support-agent": "1.2.0"}})
    staging = resolve(SNAP, "support-agent", environment="staging", overrides=overrides, now=NOW)
    production = resolve(
        SNAP, "support-agent", environment="production", overrides=overrides, now=NOW
    )
    assert (staging.version.version, staging.resolution) == ("1.2.0", "override")
    assert (production.version.version, production.resolution) == ("1.0.0", "environment")


def test_override_beats_a_running_experiment() -> None:
    """Overrides come before experiments."""
    state = PromptState(
        STATE.name,
        STATE.versions,
        STATE.active,
        experiments=(experiment(control="1.0.0", treatment="1.1.0", split=1.0),),
    )
    overrides = Overrides({"support-agent": "1.2.0"}, {})
    got = resolve(
        snapshot(state),
        "support-agent",
        environment="production",
        overrides=overrides,
        user_key="u",
        now=NOW,
    )
    assert got.resolution == "override"


def test_override_to_a_missing_version_is_a_clear_404() -> None:
    """An override that names no stored version says where it came from."""
    overrides = Overrides({"support-agent": "9.9.9"}, {})
    with pytest.raises(NoServableVersion, match="PROMPT_OVERRIDES"):
        resolve(SNAP, "support-agent", environment="production", overrides=overrides, now=NOW)


@pytest.mark.parametrize(
    ("user", "variant", "served"),
    [("user-1", "control", "1.0.0"), ("user-2", "treatment", "1.1.0")],
)
def test_running_experiment_assigns_by_user(user: str, variant: str, served: str) -> None:
    """During an experiment the user's bucket picks the arm (user-1: 1056, user-2: 514 < 1000)."""
    exp = experiment(id="exp-1", control="1.0.0", treatment="1.1.0", split=0.1)
    state = PromptState(STATE.name, STATE.versions, STATE.active, experiments=(exp,))
    got = resolve(
        snapshot(state),
        "support-agent",
        environment="production",
        user_key=user,
        request_id="r",
        now=NOW,
    )
    assert (got.variant, got.version.version, got.resolution) == (variant, served, "experiment")
    assert (got.experiment, got.assignment) == (exp, "user")


@pytest.mark.parametrize(
    "exp",
    [
        experiment(status="stopped"),
        experiment(start=NOW + timedelta(hours=1)),
        experiment(end=NOW),
    ],
    ids=["stopped", "not-started", "ended"],
)
def test_experiment_outside_its_window_is_ignored(exp: object) -> None:
    """A stopped, future or ended experiment leaves resolution to the environment."""
    state = PromptState(STATE.name, STATE.versions, STATE.active, experiments=(exp,))  # type: ignore[arg-type]
    got = resolve(snapshot(state), "support-agent", environment="production", user_key="u", now=NOW)
    assert (got.version.version, got.resolution) == ("1.0.0", "environment")


def test_unknown_prompt_is_prompt_not_found() -> None:
    """A name the registry does not hold is 404 prompt_not_found."""
    with pytest.raises(PromptNotFound) as caught:
        resolve(SNAP, "nope", environment="production", now=NOW)
    assert (caught.value.status, caught.value.code) == (404, "prompt_not_found")


@pytest.mark.parametrize(
    ("state", "environment"),
    [
        (PromptState("p", (version("p", "1.0.0"),)), "production"),
        (PromptState("p", (version("p", "1.0.0"),)), "staging"),
    ],
    ids=["no-active", "none-tested"],
)
def test_existing_name_with_nothing_to_serve_is_no_servable_version(
    state: PromptState, environment: Environment
) -> None:
    """A known name with no version for the environment is 404 no_servable_version."""
    with pytest.raises(NoServableVersion) as caught:
        resolve(snapshot(state), "p", environment=environment, now=NOW)
    assert (caught.value.status, caught.value.code) == (404, "no_servable_version")
    assert "gateway prompts" in caught.value.message


def test_pinned_missing_version_lists_known_versions() -> None:
    """Pinning a version that does not exist is a 404 naming the versions that do."""
    with pytest.raises(NoServableVersion, match=re.escape("1.0.0, 1.1.0")):
        resolve(SNAP, "support-agent", environment="production", pinned="3.0.0", now=NOW)


def test_overrides_pointing_nowhere_are_named_with_their_source() -> None:
    """An override in force whose prompt or version is missing is reported (checked at start-up
    and on every refresh); the config's overrides for other environments are not in force."""
    overrides = Overrides(
        {"support-agent": "9.9.9", "ghost": "1.0.0"},
        {"production": {"support-agent": "1.0.0"}, "staging": {"other": "2.0.0"}},
    )
    assert dangling_overrides(SNAP, overrides, "production") == [
        "PROMPT_OVERRIDES sets prompt 'ghost' to '1.0.0'; no such prompt",
        "PROMPT_OVERRIDES sets prompt 'support-agent' to '9.9.9'; no such version "
        "(known: 1.0.0, 1.1.0, 1.2.0, 1.2.0-rc.1)",
    ]
    configured = Overrides({}, {"staging": {"support-agent": "1.1.0", "other": "2.0.0"}})
    assert dangling_overrides(SNAP, configured, "production") == []
    assert dangling_overrides(SNAP, configured, "staging") == [
        "environments.staging.overrides sets prompt 'other' to '2.0.0'; no such prompt"
    ]
