"""Experiments end to end: exposures recorded off the request path, feedback, results, conclude.

Gateways run for real on loopback with the built-in mock provider; the official openai SDK makes
the calls; stores are a real SQLite file and a real redis-server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway import service
from gateway.api.app import create_app
from gateway.api.auth import ROUTE_ROLES
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.experiments import experiment_results
from gateway.files import ExperimentSpec
from gateway.prompts import PromptRegistry
from gateway.settings import ExperimentSettings, load
from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore
from tests.conftest import free_port, wait_for_port
from tests.servers import ServedGateway

VIEWER = "viewer-token-0123456789"
TOKENS = f"reader:viewer:{VIEWER}"


async def fill(store: Store, *, stopped: bool = True) -> None:
    """Prompt `exp-prompt` (1.0.0 active, 2.0.0) with experiment `exp-sat` (user_satisfaction)
    running, and `exp-old` on `old-prompt`, stopped."""
    registry = PromptRegistry(store, threshold=0.9)
    for name in ("exp-prompt", "old-prompt"):
        for version, text in (("1.0.0", "One for {{company}}."), ("2.0.0", "Two for {{company}}.")):
            await registry.create_version(
                make_draft(
                    name=name,
                    version=version,
                    messages=[Message("system", text)],
                    model="mock-model",
                ),
                actor="setup",
            )
        await registry.promote(name, "1.0.0", actor="setup", force=True)
    await registry.create_experiment(
        ExperimentSpec("exp-sat", "exp-prompt", "1.0.0", "2.0.0", 0.5), actor="setup"
    )
    await registry.create_experiment(
        ExperimentSpec("exp-old", "old-prompt", "1.0.0", "2.0.0", 0.5, metric="task_completion"),
        actor="setup",
    )
    if stopped:
        await registry.stop_experiment("exp-old", actor="setup")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedGateway, Path]]:
    """A gateway on a fresh SQLite registry with the mock provider and a viewer token."""
    path = tmp_path_factory.mktemp("experiments") / "gateway.db"
    asyncio.run(fill(SQLiteStore(path)))
    settings = load(
        None,
        {
            "GATEWAY_UPSTREAM_URL": "mock",
            "GATEWAY_ADMIN_TOKENS": TOKENS,
            "GATEWAY_EXPERIMENTS_FLUSH_INTERVAL": "0.05",
        },
    )
    gateway = ServedGateway(create_app(settings, store=SQLiteStore(path)))
    yield gateway, path
    gateway.stop()


def call(gateway: ServedGateway, prompt: str, user: str | None) -> str:
    """One managed chat call through the SDK; returns its x-request-id."""
    headers = {"X-User-Id": user} if user else {}
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="sk-x", max_retries=0, default_headers=headers
    ) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="mock-model",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"prompt": {"id": prompt, "variables": {"company": "Acme"}}},
        )
    return raw.headers["x-request-id"]


def feedback(gateway: ServedGateway, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/feedback", json=body, timeout=10, **kwargs)


def test_feedback_for_a_call_in_an_experiment_is_recorded(
    served: tuple[ServedGateway, Path],
) -> None:
    """The x-request-id of an experiment call takes a satisfaction value: 202 recorded."""
    gateway, path = served
    request_id = call(gateway, "exp-prompt", "user-1")
    response = feedback(
        gateway, {"request_id": request_id, "metric": "user_satisfaction", "value": 4}
    )
    assert (response.status_code, response.json()) == (202, {"status": "recorded"})
    store = SQLiteStore(path)
    deadline = time.monotonic() + 5
    while True:  # written off the request path: poll with a deadline
        units = asyncio.run(store.unit_outcomes("exp-sat", "user_satisfaction"))
        mine = [u for u in units if u.count]
        if mine:
            break
        assert time.monotonic() < deadline, "the feedback was never written"
        time.sleep(0.05)
    assert mine[0].total == 4 and mine[0].requests >= 1


def gateway_on(path: Path) -> ServedGateway:
    """A gateway on a new registry filled at `path` (`fill`), the mock provider, outcomes
    written every 50 ms."""
    asyncio.run(fill(SQLiteStore(path)))
    settings = load(
        None, {"GATEWAY_UPSTREAM_URL": "mock", "GATEWAY_EXPERIMENTS_FLUSH_INTERVAL": "0.05"}
    )
    return ServedGateway(create_app(settings, store=SQLiteStore(path)))


def test_feedback_for_a_written_call_while_the_store_is_down_is_503_and_retried(
    tmp_path: Path,
) -> None:
    """A call whose exposure is already in the store cannot be checked while the store is away
    (the gateway keeps nothing per written call): 503 `store_unavailable` in OpenAI's shape,
    without the store's path, nothing recorded; the same post once the store is back is taken
    and written."""
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "gateway.db"
    gateway = gateway_on(path)
    try:
        request_id = call(gateway, "exp-prompt", "user-away")
        deadline = time.monotonic() + 5
        while asyncio.run(SQLiteStore(path).exposure(request_id)) is None:
            assert time.monotonic() < deadline, "the exposure was never written"
            time.sleep(0.05)
        vote = {"request_id": request_id, "metric": "user_satisfaction", "value": 5}
        folder.rename(tmp_path / "away")
        try:
            refused = feedback(gateway, vote)
        finally:
            (tmp_path / "away").rename(folder)
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "store_unavailable" and error["type"] == "server_error"
        # The app is told what to do; where the store lives (a file's path) is for the log.
        assert "Post the feedback again" in error["message"]
        assert str(tmp_path) not in error["message"] and "gateway.db" not in error["message"]
        assert feedback(gateway, vote).status_code == 202
        while True:
            units = asyncio.run(SQLiteStore(path).unit_outcomes("exp-sat", "user_satisfaction"))
            if any(u.count for u in units):
                break
            assert time.monotonic() < deadline + 10, "the feedback was never written"
            time.sleep(0.05)
        assert [(u.total, u.count) for u in units if u.count] == [(5, 1)]
    finally:
        gateway.stop()


def test_feedback_the_instant_a_call_returns_is_taken_while_the_store_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call's record is made a moment after its answer (`GatewayService.settle`; here the
    moment is a minute long): feedback posted as soon as the answer arrived, with the store
    away, is still checked against it (the feedback route settles first) and taken, then
    written once the store is back."""
    monkeypatch.setattr(service, "SETTLE_DELAY", 60.0)
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "gateway.db"
    gateway = gateway_on(path)
    try:
        folder.rename(tmp_path / "away")
        try:
            votes = []
            for n in range(5):
                request_id = call(gateway, "exp-prompt", f"user-instant-{n}")
                vote = {"request_id": request_id, "metric": "user_satisfaction", "value": n}
                votes.append(feedback(gateway, vote).status_code)
            assert votes == [202] * 5
        finally:
            (tmp_path / "away").rename(folder)
        deadline = time.monotonic() + 15
        while True:
            units = asyncio.run(SQLiteStore(path).unit_outcomes("exp-sat", "user_satisfaction"))
            if sum(u.count for u in units) == 5:
                break
            assert time.monotonic() < deadline, "the feedback was never written"
            time.sleep(0.05)
        assert sorted(u.total for u in units if u.count) == [0, 1, 2, 3, 4]
    finally:
        gateway.stop()


def test_calls_finished_just_before_shutdown_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping the gateway right after its last calls (their records not made yet: the moment
    is a minute long here) still writes their exposures: shutdown settles them first."""
    monkeypatch.setattr(service, "SETTLE_DELAY", 60.0)
    path = tmp_path / "gateway.db"
    gateway = gateway_on(path)
    try:
        ids = [call(gateway, "exp-prompt", f"user-last-{n}") for n in range(3)]
    finally:
        gateway.stop()
    store = SQLiteStore(path)
    assert all(asyncio.run(store.exposure(request_id)) is not None for request_id in ids)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"request_id": "req_never_served", "metric": "user_satisfaction", "value": 3},
            404,
            "request_not_found",
        ),
        ({"request_id": "X", "metric": "latency", "value": 3}, 400, "invalid_feedback"),
        (
            {"request_id": "X", "metric": "user_satisfaction", "value": "good"},
            400,
            "invalid_feedback",
        ),
        (
            {"request_id": "X", "metric": "user_satisfaction", "value": True},
            400,
            "invalid_feedback",
        ),
        ({"request_id": "X", "metric": "user_satisfaction", "value": 9}, 400, "invalid_feedback"),
        ({"request_id": "X", "metric": "task_completion", "value": 0.5}, 400, "invalid_feedback"),
        ({"request_id": "", "metric": "user_satisfaction", "value": 1}, 400, "invalid_feedback"),
        (
            {"request_id": "X", "metric": "user_satisfaction", "value": 1, "x": 1},
            400,
            "invalid_feedback",
        ),
        ([1, 2], 400, "invalid_json"),
    ],
)
def test_bad_feedback_is_refused_in_openais_shape(
    served: tuple[ServedGateway, Path], body: Any, status: int, code: str
) -> None:
    """Unknown ids, unknown metrics, non-numbers and out-of-range values are clear 4xx."""
    gateway, _ = served
    response = feedback(gateway, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_feedback_for_an_unmanaged_call_is_not_found(served: tuple[ServedGateway, Path]) -> None:
    """A call that was served outside any experiment has no exposure: 404."""
    gateway, _ = served
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="mock-model", messages=[{"role": "user", "content": "hi"}]
        )
    response = feedback(
        gateway,
        {"request_id": raw.headers["x-request-id"], "metric": "user_satisfaction", "value": 1},
    )
    assert response.json()["error"]["code"] == "request_not_found"


def test_feedback_for_another_metric_is_refused(served: tuple[ServedGateway, Path]) -> None:
    """The experiment measures user_satisfaction; task_completion for its call is 400."""
    gateway, _ = served
    request_id = call(gateway, "exp-prompt", "user-2")
    response = feedback(
        gateway, {"request_id": request_id, "metric": "task_completion", "value": 1}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "metric_not_measured")


def test_malformed_huge_and_misrouted_bodies(served: tuple[ServedGateway, Path]) -> None:
    """Not JSON, a body over the limit, and a GET each get OpenAI's error shape."""
    gateway, _ = served
    url = gateway.url + "/v1/feedback"
    broken = httpx.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert (broken.status_code, broken.json()["error"]["code"]) == (400, "invalid_json")
    huge = httpx.post(url, content=b" " * 100_000, headers={"content-type": "application/json"})
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "request_too_large")
    wrong = httpx.get(url)
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")


def test_results_need_an_admin_token(served: tuple[ServedGateway, Path]) -> None:
    """GET /admin/experiments/{id}/results: 401 without or with a wrong token, 200 for a viewer."""
    gateway, _ = served
    url = gateway.url + "/admin/experiments/exp-sat/results"
    missing = httpx.get(url)
    assert (missing.status_code, missing.json()["error"]["type"]) == (401, "authentication_error")
    assert missing.json()["error"]["code"] == "invalid_admin_token"
    wrong = httpx.get(url, headers={"authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 401
    assert "not-the-token" not in wrong.text
    ok = httpx.get(url, headers={"authorization": f"Bearer {VIEWER}"})
    assert ok.status_code == 200
    body = ok.json()
    assert (body["experiment"], body["prompt_name"], body["metric"]) == (
        "exp-sat",
        "exp-prompt",
        "user_satisfaction",
    )
    assert set(body) >= {
        "status",
        "direction",
        "alpha",
        "control",
        "treatment",
        "difference",
        "test",
        "p_value",
        "srm",
        "recommendation",
        "reason",
    }
    unknown = httpx.get(
        gateway.url + "/admin/experiments/nope/results",
        headers={"authorization": f"Bearer {VIEWER}"},
    )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "experiment_not_found")


def test_every_admin_route_is_in_the_role_table(served: tuple[ServedGateway, Path]) -> None:
    """Each /admin route of the app has a role in ROUTE_ROLES (the table the guard reads)."""
    gateway, _ = served
    schema = httpx.get(gateway.url + "/schema/openapi.json").json()
    routes = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if path.startswith("/admin")
        for method in item
    }
    assert routes
    assert routes <= set(ROUTE_ROLES)


def test_with_no_tokens_every_admin_call_is_refused(tmp_path: Path) -> None:
    """No token configured: 401 with a message that says how to add one."""
    path = tmp_path / "g.db"
    asyncio.run(fill(SQLiteStore(path)))
    gateway = ServedGateway(
        create_app(load(None, {"GATEWAY_UPSTREAM_URL": "mock"}), store=SQLiteStore(path))
    )
    try:
        response = httpx.get(
            gateway.url + "/admin/experiments/exp-sat/results",
            headers={"authorization": "Bearer anything-long-enough-here"},
        )
        assert response.status_code == 401
        assert "GATEWAY_ADMIN_TOKENS" in response.json()["error"]["message"]
    finally:
        gateway.stop()


def test_feedback_after_the_experiment_stopped_is_refused(tmp_path: Path) -> None:
    """A call served while the experiment ran, rated after it stopped: 409 experiment_stopped."""
    path = tmp_path / "g.db"
    asyncio.run(fill(SQLiteStore(path), stopped=False))
    settings = load(
        None, {"GATEWAY_UPSTREAM_URL": "mock", "GATEWAY_EXPERIMENTS_FLUSH_INTERVAL": "0.05"}
    )
    gateway = ServedGateway(create_app(settings, store=SQLiteStore(path)))
    try:
        request_id = call(gateway, "old-prompt", "user-9")
        asyncio.run(
            PromptRegistry(SQLiteStore(path), threshold=0.9).stop_experiment("exp-old", actor="t")
        )
        deadline = time.monotonic() + 5
        while True:
            response = feedback(
                gateway, {"request_id": request_id, "metric": "task_completion", "value": 1}
            )
            if response.status_code != 202 or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the snapshot picks the stop up within the poll interval
        assert (response.status_code, response.json()["error"]["code"]) == (
            409,
            "experiment_stopped",
        )
    finally:
        gateway.stop()


# ---- two gateway processes on one Redis ----------------------------------------------------------


@pytest.fixture
def redis_registry(redis_url: str) -> Iterator[str]:
    """A database of this test's own on the session's redis-server, with the experiment
    prompts; emptied before and after."""
    url = redis_url.rsplit("/", 1)[0] + "/5"
    asyncio.run(_flush(url))
    asyncio.run(_fill(url))
    yield url
    asyncio.run(_flush(url))


async def _fill(url: str) -> None:
    store = RedisStore(url)
    try:
        await fill(store)
    finally:
        await store.close()


async def _flush(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


def test_two_gateways_on_one_redis_count_everything_once(
    redis_registry: str, tmp_path: Path
) -> None:
    """A gateway in this process and one in another, on the same Redis, serve one experiment;
    feedback is posted to both; results count every exposure and feedback exactly once."""
    environ = {
        "GATEWAY_UPSTREAM_URL": "mock",
        "GATEWAY_STORE_URL": redis_registry,
        "GATEWAY_EXPERIMENTS_FLUSH_INTERVAL": "0.05",
        "GATEWAY_SNAPSHOT_PATH": str(tmp_path / "gateway.snapshot.json"),
    }
    # This process's gateway writes its queue every half second, the other one every 50 ms.
    slow = {**environ, "GATEWAY_EXPERIMENTS_FLUSH_INTERVAL": "0.5"}
    local = ServedGateway(create_app(load(None, slow), store=RedisStore(redis_registry)))
    port = free_port()
    other = subprocess.Popen(
        [str(Path(sys.executable).parent / "gateway"), "serve", "--port", str(port)],
        env={**os.environ, **environ, "GATEWAY_CONFIG": str(tmp_path / "none.yaml")},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (tmp_path / "none.yaml").write_text("")
    try:
        wait_for_port(port, 20)
        remote = _Remote(f"http://127.0.0.1:{port}", port)
        gateways: list[Any] = [local, remote]
        served: list[tuple[str, int]] = []  # (request id, gateway that served it)
        for i in range(40):
            served.append((call(gateways[i % 2], "exp-prompt", f"user-{i % 15}"), i % 2))
        for n, (request_id, where) in enumerate(served[:30]):
            target = gateways[1 - where] if n % 3 else gateways[where]  # most to the other one
            response = feedback(
                target, {"request_id": request_id, "metric": "user_satisfaction", "value": 5}
            )
            assert response.status_code == 202, response.text
        requests, feedback_count, users = asyncio.run(_count(redis_registry, (40, 30)))
        assert (requests, feedback_count) == (40, 30)
        assert users == 15
        # A value replaced through the other gateway a moment later: the later one stays,
        # though the gateway that took the first writes it last (its flush interval is longer).
        for request_id, _ in served[:10]:
            for target, value in ((local, 1), (remote, 4)):
                body = {"request_id": request_id, "metric": "user_satisfaction", "value": value}
                assert feedback(target, body).status_code == 202
        assert asyncio.run(_satisfaction(redis_registry, 20 * 5 + 10 * 4)) == (30, 140.0)
    finally:
        local.stop()
        other.terminate()
        other.wait(10)


async def _count(url: str, expected: tuple[int, int]) -> tuple[int, int, int]:
    """Exposures, feedback values and users that results see, polled until `expected`."""
    store = RedisStore(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            results = await experiment_results(
                store, "exp-sat", ExperimentSettings(min_users_per_variant=2)
            )
            requests = results.control.requests + results.treatment.requests
            units = await store.unit_outcomes("exp-sat", "user_satisfaction")
            counted = (requests, sum(u.count for u in units))
            if counted == expected or time.monotonic() > deadline:
                return (*counted, results.control.users + results.treatment.users)
            await asyncio.sleep(0.1)
    finally:
        await store.close()


async def _satisfaction(url: str, expected: float) -> tuple[int, float]:
    """The satisfaction values counted and their sum, a second after the last post, then polled
    until the sum is `expected` (or for 3 s more)."""
    store = RedisStore(url)
    try:
        deadline = time.monotonic() + 3
        await asyncio.sleep(1)  # both gateways' next writes, the slower one's included
        while True:
            units = await store.unit_outcomes("exp-sat", "user_satisfaction")
            count, total = sum(u.count for u in units), sum(u.total for u in units)
            if total == expected or time.monotonic() > deadline:
                return count, total
            await asyncio.sleep(0.1)
    finally:
        await store.close()


class _Remote:
    """A gateway in another process, addressed like a ServedGateway."""

    def __init__(self, url: str, port: int) -> None:
        self.url = url
        self.port = port
