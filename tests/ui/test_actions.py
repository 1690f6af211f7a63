"""Console actions act on what the page showed, and say what really happened: in-process, a real
app over a real SQLite store.

- Each action form carries the state it was drawn for (the active version, the rollback's
  target, the experiment's status, whether concluding promotes); a form submitted after that
  state changed (a second click, a stale tab, another operator) is refused with 409 and changes
  nothing.
- The notice after an action travels in a signed, short-lived cookie shown once: a link cannot
  fake one, and it says what production requests get now (an experiment still splitting traffic
  included).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient

from gateway.api.app import create_app
from gateway.core.model import TestResults as Results  # not a pytest class
from gateway.core.outcomes import Exposure, Feedback
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.files import ExperimentSpec
from gateway.prompts import PromptRegistry
from gateway.stores.sqlite import SQLiteStore
from gateway.ui.session import FLASH_COOKIE
from tests.outcome_rows import record_outcomes
from tests.ui.test_freshness import ADMIN, in_process_settings

PASSED = Results(total=2, passed=2, failed=0, pass_rate=1.0)
HALF = Results(total=2, passed=1, failed=1, pass_rate=0.5)


async def add_version(registry: PromptRegistry, name: str, version: str) -> None:
    draft = make_draft(
        name=name,
        version=version,
        messages=[Message("system", f"You help, version {version}.")],
        model="mock-model",
    )
    await registry.create_version(draft, actor="setup")


async def start_experiment(registry: PromptRegistry, experiment_id: str, name: str) -> None:
    """`name` 1.0.0 against 1.1.0, half the users each, rated by user_satisfaction, running
    since an hour ago."""
    spec = ExperimentSpec(
        id=experiment_id,
        prompt_name=name,
        control_version="1.0.0",
        treatment_version="1.1.0",
        traffic_split=0.5,
        metric="user_satisfaction",
        start=datetime.now(UTC) - timedelta(hours=1),
    )
    await registry.create_experiment(spec, actor="setup")


async def fill(path: Path) -> None:
    """`steps`: 1.0.0, 1.1.0, 1.2.0 promoted in turn (active 1.2.0, a rollback goes to 1.1.0).
    `split`: 1.0.0 active, experiment `exp-split` running against 1.1.0. `flaky`: 1.0.0 passed
    its tests, then failed them when tested again."""
    store = SQLiteStore(path)
    registry = PromptRegistry(store, threshold=0.9)
    for name, versions in (("steps", ("1.0.0", "1.1.0", "1.2.0")), ("split", ("1.0.0", "1.1.0"))):
        for version in versions:
            await add_version(registry, name, version)
            await registry.record_test_run(name, version, PASSED, actor="setup")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        await registry.promote("steps", version, actor="setup")
    await registry.promote("split", "1.0.0", actor="setup")
    draft = make_draft(
        name="flaky", version="1.0.0", messages=[Message("system", "Hi.")], model="mock-model"
    )
    await registry.create_version(draft, actor="setup")
    await registry.record_test_run("flaky", "1.0.0", PASSED, actor="setup")
    await registry.record_test_run("flaky", "1.0.0", HALF, actor="setup")
    await start_experiment(registry, "exp-split", "split")
    at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    exposures = [
        Exposure(f"r{i}", "exp-split", variant, version, f"u{i}", at, 100.0, 1, 1, None, 200)
        for i, (variant, version) in enumerate(
            [("control", "1.0.0")] * 4 + [("treatment", "1.1.0")] * 4
        )
    ]
    ratings = [Feedback(f"r{i}", "user_satisfaction", 3.0 + i % 3) for i in range(1, 8)]
    await record_outcomes(store, exposures, ratings)  # one hour; u0 gave no rating
    await store.close()


@pytest.fixture
def app_and_path(tmp_path: Path) -> Iterator[tuple[object, Path]]:
    path = tmp_path / "gateway.db"
    asyncio.run(fill(path))
    settings = in_process_settings(tmp_path)
    yield create_app(settings, store=SQLiteStore(path)), path


@pytest.fixture
def client(app_and_path: tuple[object, Path]) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(app_and_path[0], base_url="http://127.0.0.1") as client:  # type: ignore[arg-type]
        form = client.get("/ui/sign-in").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        signed = client.post("/ui/sign-in", data={"csrf": csrf[1], "token": ADMIN})
        assert signed.status_code == 200
        yield client


def form_of(page: str, action: str, button: str | None = None) -> dict[str, str]:
    """The hidden fields of the POST form whose action ends with `action` (and, when given,
    that has a button reading `button`)."""
    for found in re.finditer(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S):
        if found[1].endswith(action) and (button is None or f">{button}</button>" in found[2]):
            return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', found[2]))
    raise AssertionError(f"no form for {action} {button or ''} in the page")


def notice(page: str) -> str | None:
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', page, re.S)
    return found[1] if found else None


def stored(path: Path, name: str) -> tuple[str | None, tuple[str, ...]]:
    async def read() -> tuple[str | None, tuple[str, ...]]:
        store = SQLiteStore(path)
        try:
            state = await store.prompt(name)
            return state.active, state.history
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_rollback_submitted_twice_goes_back_one_step(
    client: TestClient,  # type: ignore[type-arg]
    app_and_path: tuple[object, Path],
) -> None:
    """The tester's case: "Roll back from 1.2.0 to 1.1.0" posted twice (two tabs, or two
    operators) rolls back once; the second is a 409 page naming what is active now."""
    page = client.get("/ui/prompts/steps").text
    assert ">Roll back from 1.2.0 to 1.1.0</button>" in page
    form = form_of(page, "/rollback")
    assert (form["active"], form["target"]) == ("1.2.0", "1.1.0")
    first = client.post("/ui/prompts/steps/rollback", data=form)
    assert first.status_code == 200
    assert notice(first.text) == "Rolled back from 1.2.0 to 1.1.0: production serves it now."
    second = client.post("/ui/prompts/steps/rollback", data=form)
    assert second.status_code == 409
    assert "1.2.0 is no longer active: 1.1.0 is; nothing was changed." in second.text
    assert stored(app_and_path[1], "steps") == ("1.1.0", ("1.0.0",))


def test_a_rollback_whose_target_moved_is_refused(
    client: TestClient,  # type: ignore[type-arg]
    app_and_path: tuple[object, Path],
) -> None:
    """A form that names the right active version but another target (the history changed
    under it) is refused too."""
    form = form_of(client.get("/ui/prompts/steps").text, "/rollback")
    refused = client.post("/ui/prompts/steps/rollback", data={**form, "target": "1.0.0"})
    assert refused.status_code == 409
    assert "A rollback of steps now goes to 1.1.0, not 1.0.0; nothing was changed." in (
        refused.text
    )
    assert stored(app_and_path[1], "steps") == ("1.2.0", ("1.0.0", "1.1.0"))


def test_a_promotion_from_a_stale_page_is_refused(
    client: TestClient,  # type: ignore[type-arg]
    app_and_path: tuple[object, Path],
) -> None:
    """A promote form drawn while 1.2.0 was active, posted after someone rolled back, is 409;
    posting the version that is already active changes nothing and says so."""
    page = client.get("/ui/prompts/steps").text
    stale = form_of(page, "/promote", "Promote 1.0.0")
    assert (stale["version"], stale["active"]) == ("1.0.0", "1.2.0")
    rolled = client.post("/ui/prompts/steps/rollback", data=form_of(page, "/rollback"))
    assert rolled.status_code == 200
    refused = client.post("/ui/prompts/steps/promote", data=stale)
    assert refused.status_code == 409
    assert "1.2.0 is no longer active: 1.1.0 is; nothing was changed." in refused.text
    again = client.post(
        "/ui/prompts/steps/promote", data={**stale, "version": "1.1.0", "active": "1.2.0"}
    )
    assert again.status_code == 200
    assert notice(again.text) == (
        "1.1.0 was already active; nothing was changed (production serves 1.1.0)."
    )
    assert stored(app_and_path[1], "steps") == ("1.1.0", ("1.0.0",))


def test_the_notice_is_a_signed_cookie_shown_once_never_the_url(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    """A link with the old `?done=promoted` shows nothing; the action's own notice is shown on
    the next page only; a forged cookie shows nothing."""
    faked = client.get("/ui/prompts/steps?done=promoted&show=1.0.0").text
    assert notice(faked) is None and "Promoted" not in faked
    form = form_of(client.get("/ui/prompts/steps").text, "/promote", "Promote 1.0.0")
    done = client.post("/ui/prompts/steps/promote", data=form, follow_redirects=False)
    assert done.status_code == 303
    assert "done=" not in done.headers["location"]
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith(FLASH_COOKIE))
    assert {"httponly", "samesite=strict", "path=/ui"} <= {
        p.strip().lower() for p in cookie.split(";")[1:]
    }
    shown = client.get(done.headers["location"]).text
    assert notice(shown) == "Promoted 1.0.0: production serves it now."
    assert notice(client.get("/ui/prompts/steps").text) is None  # once
    client.cookies.set(FLASH_COOKIE, "eyJtIjoiUHJvbW90ZWQgOS45LjkifQ.forged", path="/ui")
    assert notice(client.get("/ui/prompts/steps").text) is None


def test_a_promotion_during_an_experiment_says_production_still_splits(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    """Promoting 1.1.0 of a prompt in an experiment makes it active, but production requests
    are still split by the experiment: the notice says that, not "serves it now"."""
    form = form_of(client.get("/ui/prompts/split").text, "/promote", "Promote 1.1.0")
    done = client.post("/ui/prompts/split/promote", data=form)
    assert done.status_code == 200
    assert notice(done.text) == (
        "Promoted 1.1.0: it is the active version, but production still splits its traffic in "
        "experiment exp-split: 1.0.0 to 50% of users, 1.1.0 to 50%."
    )


def test_stopping_twice_and_concluding_on_changed_results_are_refused(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    """A conclude form drawn for a promoting recommendation is 409 when the results say
    otherwise now; a stop form posted twice stops once, the second is 409."""
    page = client.get("/ui/experiments/exp-split").text
    conclude = form_of(page, "/conclude")
    assert conclude["promote"] == "no"  # no data: keep running
    refused = client.post("/ui/experiments/exp-split/conclude", data={**conclude, "promote": "yes"})
    assert refused.status_code == 409
    assert "Nothing was changed" in refused.text
    stop = form_of(page, "/stop")
    assert stop["status"] == "running"
    first = client.post("/ui/experiments/exp-split/stop", data=stop)
    assert first.status_code == 200
    assert notice(first.text) == "Stopped exp-split: for split, production serves 1.0.0."
    second = client.post("/ui/experiments/exp-split/stop", data=stop)
    assert second.status_code == 409
    assert "Experiment exp-split is already stopped; nothing was changed." in second.text
    bare = client.post("/ui/experiments/exp-split/stop", data={"csrf": stop["csrf"]})
    assert bare.status_code == 409  # a form without the status field is no "done" either


def test_a_failed_retest_reads_as_what_it_is(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    """A version tested twice (passed, then 1 of 2): the prompt page says it did not pass its
    tests, with its rate and the threshold; the Prompts page's staging cell does not tell the
    operator to test one; the audit shows the previous rate and words, not Python values."""
    prompt = client.get("/ui/prompts/flaky").text
    assert "<td>no (50%, threshold 90%)</td>" in prompt
    prompts = client.get("/ui/prompts").text
    cell = re.search(
        r'<td data-env="staging">(.*?)</td>', prompts.split("/ui/prompts/flaky")[1], re.S
    )
    assert cell is not None
    assert "failed their tests" in cell[1] and "Test one with" not in cell[1]
    audit = client.get("/ui/audit?prompt=flaky").text
    assert "<dt>pass_rate</dt><dd>100% → 50%</dd>" in audit
    assert "<dt>is_tested</dt><dd>yes → no</dd>" in audit
    assert "<dt>pass_rate</dt><dd>not set → 100%</dd>" in audit  # the first run
    assert "True" not in audit and "None" not in audit


def test_the_experiment_page_gives_units_users_with_a_value_and_one_period_band(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    """One hour of data: the difference over time still draws its 95% band; means carry the
    metric's unit; the users the means use are counted (u0 gave no rating)."""
    page = client.get("/ui/experiments/exp-split").text
    over_time = page.split('id="over-time-heading"')[1]
    assert '<rect class="band"' in over_time
    assert "Mean (rating 0-5)" in page and "Difference (rating 0-5)" in page
    assert "<td>3 of 4</td>" in page and "<td>4 of 4</td>" in page


def test_a_version_diffed_with_itself_says_so(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    page = client.get("/ui/prompts/steps?from=1.1.0&to=1.1.0").text
    assert "1.1.0 is compared with itself: the versions are identical." in page
    assert "identical" not in client.get("/ui/prompts/steps?from=1.0.0&to=1.1.0").text


def test_a_request_of_the_experiment_links_to_its_trace(tmp_path: Path) -> None:
    """With tracing on and `ui.trace_url` naming `{trace_id}` (the README's Jaeger example), the
    experiment page's request lookup shows the call's request id and trace id, linked to the
    trace the gateway exported for it."""
    from tests.servers import OtlpReceiver

    path = tmp_path / "gateway.db"
    asyncio.run(fill(path))
    receiver = OtlpReceiver()
    try:
        settings = in_process_settings(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            GATEWAY_UI_TRACE_URL="http://jaeger:16686/trace/{trace_id}",
        )
        app = create_app(settings, store=SQLiteStore(path))
        with TestClient(app, base_url="http://127.0.0.1") as client:  # type: ignore[arg-type]
            answer = client.post(
                "/v1/chat/completions",
                json={
                    "model": "mock-model",
                    "prompt": {"name": "split"},
                    "messages": [{"role": "user", "content": "Hello"}],
                },
                headers={"x-user-id": "user-42"},
            )
            assert answer.status_code == 200, answer.text
            request_id = answer.headers["x-request-id"]
            trace_id = receiver.wait_for(request_id).trace_id
            form = client.get("/ui/sign-in").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf is not None
            client.post("/ui/sign-in", data={"csrf": csrf[1], "token": ADMIN})
            deadline = datetime.now(UTC) + timedelta(seconds=10)
            while True:  # the exposure is written by the background batch writer
                page = client.get("/ui/experiments/exp-split", params={"request": request_id})
                if "No call of this experiment" not in page.text:
                    break
                assert datetime.now(UTC) < deadline, "the exposure was never written"
                time.sleep(0.1)
        link = f'<a href="http://jaeger:16686/trace/{trace_id}">'
        assert f"{link}{request_id}</a>" in page.text
        assert f"{link}{trace_id}</a>" in page.text
    finally:
        receiver.stop()


async def fill_gated(path: Path) -> None:
    """`gate`: 1.0.0 active, 1.1.0 failed its tests; experiment `exp-gate` between them, with
    30 users an arm whose ratings favour the treatment clearly."""
    store = SQLiteStore(path)
    registry = PromptRegistry(store, threshold=0.9)
    for version in ("1.0.0", "1.1.0"):
        await add_version(registry, "gate", version)
    await registry.record_test_run("gate", "1.0.0", PASSED, actor="setup")
    await registry.record_test_run("gate", "1.1.0", HALF, actor="setup")
    await registry.promote("gate", "1.0.0", actor="setup")
    await start_experiment(registry, "exp-gate", "gate")
    at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    exposures, ratings = [], []
    for i in range(60):
        variant, version = ("control", "1.0.0") if i % 2 else ("treatment", "1.1.0")
        exposures.append(
            Exposure(f"g{i}", "exp-gate", variant, version, f"u{i}", at, 100.0, 1, 1, None, 200)
        )
        score = (1.0 + i % 3) if variant == "control" else (4.0 + i % 2)
        ratings.append(Feedback(f"g{i}", "user_satisfaction", score))
    await record_outcomes(store, exposures, ratings)
    await store.close()


def test_concluding_for_a_version_that_failed_its_tests_warns_and_admins_can_force(
    tmp_path: Path,
) -> None:
    """The results recommend the treatment, whose version failed its tests: the page says so
    next to the conclude button, which is refused (409, gate), and an admin's force-promote
    conclude stops the experiment and promotes it."""
    path = tmp_path / "gateway.db"
    asyncio.run(fill_gated(path))
    settings = in_process_settings(tmp_path, GATEWAY_EXPERIMENTS_MIN_USERS="10")
    with TestClient(
        create_app(settings, store=SQLiteStore(path)), base_url="http://127.0.0.1"
    ) as client:  # type: ignore[arg-type]
        form = client.get("/ui/sign-in").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        client.post("/ui/sign-in", data={"csrf": csrf[1], "token": ADMIN})
        page = client.get("/ui/experiments/exp-gate").text
        assert "Recommendation: promote treatment" in page
        assert "1.1.0 has not passed its tests" in page
        assert "50% passed, 1 of 2" in page
        plain = form_of(page, "/conclude", "Conclude exp-gate and promote 1.1.0")
        refused = client.post("/ui/experiments/exp-gate/conclude", data=plain)
        assert refused.status_code == 409
        assert stored(path, "gate")[0] == "1.0.0"
        forced = form_of(page, "/conclude", "Conclude exp-gate and force-promote 1.1.0")
        assert forced["force"] == "yes"
        done = client.post("/ui/experiments/exp-gate/conclude", data=forced)
        assert done.status_code == 200, done.text
        assert notice(done.text) is not None and "promoted 1.1.0" in (notice(done.text) or "")
    assert stored(path, "gate")[0] == "1.1.0"
