"""The admin API (PRODUCT §6.1) served for real: roles, every route's behaviour, bad input, /schema.

A gateway runs on loopback with a SQLite registry and the built-in mock provider (prompt test
runs pass offline); httpx makes the calls with bearer tokens of each role.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import msgspec
import openai
import orjson
import pytest
import yaml
from openapi_spec_validator import validate as validate_openapi
from typer.testing import CliRunner

from gateway.api import admin_models
from gateway.api.app import create_app
from gateway.api.auth import ROUTE_ROLES
from gateway.cli import app as cli_app
from gateway.core import model
from gateway.core.candidates import find_candidates
from gateway.core.capture import CallShape, sighting
from gateway.core.promptfile import parse_prompt_file
from gateway.core.rendering import Message
from gateway.files import ExperimentSpec, load_prompt_files
from gateway.prompts import PromptRegistry
from gateway.settings import ROLES, load
from gateway.stores import codec
from gateway.stores.sqlite import SQLiteStore
from tests.conftest import ROOT
from tests.factories import T0
from tests.servers import OtlpReceiver, ServedGateway

VIEWER = "viewer-secret-3f9a1c7e52"
EDITOR = "editor-secret-8b2d4f6a91"
ADMIN = "admin-secret-5e7c0a2b3d4"
WRONG = "wrong-secret-0a1b2c3d4e5"
TOKENS = f"vera:viewer:{VIEWER},eddie:editor:{EDITOR},ada:admin:{ADMIN}"
CALLERS: dict[str, str | None] = {
    "none": None,
    "wrong": WRONG,
    "viewer": VIEWER,
    "editor": EDITOR,
    "admin": ADMIN,
}


def prompt_file(name: str, *contents: str, tests: bool = True) -> dict[str, Any]:
    """A prompt file as JSON: versions 1.0.0, 2.0.0, ... with these system messages, and a test
    that passes when the output names Acme (the mock quotes the system message)."""
    doc: dict[str, Any] = {
        "name": name,
        "versions": [
            {
                "version": f"{i + 1}.0.0",
                "model": "mock-model",
                "messages": [{"role": "system", "content": text}],
            }
            for i, text in enumerate(contents)
        ],
    }
    if tests:
        doc["tests"] = [
            {
                "id": "names-the-company",
                "variables": {"company": "Acme"},
                "messages": [{"role": "user", "content": "Hi"}],
                "expect": {"contains": ["Acme"]},
            }
        ]
    return doc


WALK = prompt_file("walk", "You help {{company}} customers.", "You help {{company}} kindly.")
PASSED = model.TestResults(total=1, passed=1, failed=0, pass_rate=1.0)


@dataclass
class Api:
    """Calls the served gateway with a bearer token (the admin's unless told)."""

    url: str

    def __call__(
        self, method: str, path: str, token: str | None = ADMIN, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["authorization"] = f"Bearer {token}"
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


@dataclass
class Served:
    """The gateway under test, its registry file and a client."""

    gateway: ServedGateway
    path: Path
    api: Api

    def run(self, work: Callable[[PromptRegistry], Awaitable[Any]]) -> Any:
        """Run `work` on a registry of the same SQLite file (as the CLI would)."""
        return asyncio.run(work(PromptRegistry(SQLiteStore(self.path), threshold=0.9)))


async def fill(registry: PromptRegistry) -> None:
    """The shipped prompts (the judge included), `walk` (both versions tested, 1.0.0 active) and
    `fixture-ab` with experiment `fixed-exp` running."""
    await registry.push(load_prompt_files([ROOT / "config/prompts"]), actor="setup")
    ab = prompt_file("fixture-ab", "A for {{company}}.", "B for {{company}}.")
    for doc in (WALK, ab):
        await registry.push([parse_prompt_file(doc, doc["name"])], actor="setup")
        for version in ("1.0.0", "2.0.0"):
            await registry.record_test_run(doc["name"], version, PASSED, actor="setup")
        await registry.promote(doc["name"], "1.0.0", actor="setup")
    await registry.create_experiment(
        ExperimentSpec("fixed-exp", "fixture-ab", "1.0.0", "2.0.0", 0.5), actor="setup"
    )


def serve(root: Path, **environ: str) -> tuple[ServedGateway, Path]:
    """A gateway on a filled SQLite registry under `root`, with the three tokens."""
    path = root / "gateway.db"
    asyncio.run(fill(PromptRegistry(SQLiteStore(path), threshold=0.9)))
    config = root / "gateway.yaml"
    config.write_text(f"prompts_dir: {ROOT / 'config/prompts'}\n")
    env = {"GATEWAY_UPSTREAM_URL": "mock", "GATEWAY_ADMIN_TOKENS": TOKENS, **environ}
    return ServedGateway(create_app(load(config, env), store=SQLiteStore(path))), path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One gateway for this module; each test works on prompts of its own."""
    gateway, path = serve(tmp_path_factory.mktemp("admin"))
    yield Served(gateway, path, Api(gateway.url))
    gateway.stop()


def schema(api: Api) -> dict[str, Any]:
    response = api("GET", "/schema/openapi.json", token=None)
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def admin_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path template) of every /admin operation in the schema."""
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        if path.startswith("/admin")
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def fingerprint(api: Api) -> tuple[Any, ...]:
    """Everything an admin write could change: the audit log, prompts, experiments."""
    return tuple(
        api("GET", path).json()
        for path in ("/admin/audit?limit=1000", "/admin/prompts", "/admin/experiments")
    )


def error(response: httpx.Response, status: int, code: str) -> str:
    """Assert an OpenAI-shaped error with this status and code; return its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    assert message
    return message


# ---- roles: every route, every caller --------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A request that succeeds on a route for a caller with the role, after `prepare`."""

    path: str
    body: Any = None
    prepare: Callable[[PromptRegistry], Awaitable[Any]] | None = None
    """Run first; when it returns a path, the request goes there instead of `path`; when it
    returns (path, body), that body is sent too."""


async def with_candidate(registry: PromptRegistry) -> tuple[str, dict[str, Any]]:
    """A fresh captured system prompt (a candidate is adopted once), and a body adopting its
    candidate under a fresh name."""
    text = f"Walk {uuid.uuid4().hex} {uuid.uuid4().hex}."
    shape = CallShape("gpt-4o-mini", None, None)
    await registry.store.record_captures([sighting("system", text, shape, T0)], limit=100)
    (candidate,) = find_candidates([sighting("system", text, shape, T0)])
    name = f"walk-adopted-{uuid.uuid4().hex[:8]}"
    return "/admin/adoption/adopt", {"candidate": candidate.id, "name": name}


async def with_history(registry: PromptRegistry) -> None:
    """Give `walk` an earlier active version, so that rollback has one to go back to."""
    await registry.promote("walk", "2.0.0", actor="setup", force=True)
    await registry.promote("walk", "1.0.0", actor="setup", force=True)


WALK_EXPERIMENT = {
    "id": "walk-exp",
    "prompt_name": "walk",
    "control_version": "1.0.0",
    "treatment_version": "2.0.0",
    "traffic_split": 0.5,
    "metric": "user_satisfaction",
}


async def with_experiment(registry: PromptRegistry) -> None:
    """Make sure `walk-exp` exists (created once, the same afterwards)."""
    await registry.ensure_experiment(
        ExperimentSpec("walk-exp", "walk", "1.0.0", "2.0.0", 0.5), actor="setup"
    )


async def with_running_experiment(registry: PromptRegistry) -> str:
    """A fresh running experiment on `walk` (a stopped one cannot be concluded): its path."""
    running = [
        e for e in (await registry.store.prompt("walk")).experiments if e.status == "running"
    ]
    for experiment in running:
        await registry.stop_experiment(experiment.id, actor="setup")
    fresh = f"walk-conclude-{uuid.uuid4().hex[:8]}"
    await registry.create_experiment(
        ExperimentSpec(fresh, "walk", "1.0.0", "2.0.0", 0.5), actor="setup"
    )
    return f"/admin/experiments/{fresh}/conclude"


SAMPLES = {
    ("GET", "/admin/prompts"): Sample("/admin/prompts"),
    ("POST", "/admin/prompts"): Sample("/admin/prompts", WALK),
    ("GET", "/admin/prompts/{name}"): Sample("/admin/prompts/walk"),
    ("GET", "/admin/prompts/{name}/versions/{version}"): Sample(
        "/admin/prompts/walk/versions/1.0.0"
    ),
    ("POST", "/admin/prompts/{name}/versions/{version}/render"): Sample(
        "/admin/prompts/walk/versions/1.0.0/render", {"variables": {"company": "Acme"}}
    ),
    ("POST", "/admin/prompts/{name}/versions/{version}/test"): Sample(
        "/admin/prompts/walk/versions/1.0.0/test", WALK
    ),
    ("GET", "/admin/prompts/{name}/resolve"): Sample("/admin/prompts/walk/resolve?env=staging"),
    ("GET", "/admin/prompts/{name}/diff"): Sample("/admin/prompts/walk/diff?from=1.0.0&to=2.0.0"),
    ("POST", "/admin/prompts/{name}/promote"): Sample(
        "/admin/prompts/walk/promote", {"version": "1.0.0"}
    ),
    ("POST", "/admin/prompts/{name}/rollback"): Sample(
        "/admin/prompts/walk/rollback", prepare=with_history
    ),
    ("GET", "/admin/experiments"): Sample("/admin/experiments"),
    ("POST", "/admin/experiments"): Sample("/admin/experiments", WALK_EXPERIMENT),
    ("GET", "/admin/experiments/{id}"): Sample(
        "/admin/experiments/walk-exp", prepare=with_experiment
    ),
    ("POST", "/admin/experiments/{id}/stop"): Sample(
        "/admin/experiments/walk-exp/stop", prepare=with_experiment
    ),
    ("GET", "/admin/experiments/{id}/results"): Sample(
        "/admin/experiments/walk-exp/results", prepare=with_experiment
    ),
    ("POST", "/admin/experiments/{id}/conclude"): Sample(
        "/admin/experiments/walk-exp/conclude", prepare=with_running_experiment
    ),
    ("GET", "/admin/audit"): Sample("/admin/audit?limit=5"),
    ("GET", "/admin/adoption/candidates"): Sample("/admin/adoption/candidates"),
    ("POST", "/admin/adoption/adopt"): Sample("/admin/adoption/adopt", prepare=with_candidate),
}
"""One request per /admin route; the walk below fails on a route that has none."""


@pytest.mark.parametrize("caller", list(CALLERS))
def test_every_admin_route_answers_as_its_role_allows(served: Served, caller: str) -> None:
    """Every /admin route of the schema: 401 without or with a wrong token, 403 under the role
    ROUTE_ROLES names for it, 2xx with that role or a higher one."""
    routes = admin_routes(schema(served.api))
    assert routes - set(ROUTE_ROLES) == set(), "routes missing from ROUTE_ROLES"
    assert routes == set(SAMPLES), "every route needs a sample request here"
    mismatches = []
    for method, template in sorted(routes):
        sample = SAMPLES[(method, template)]
        path, body = sample.path, sample.body
        if sample.prepare is not None:
            prepared = served.run(sample.prepare)
            path = prepared if isinstance(prepared, str) else path
            if isinstance(prepared, tuple):
                path, body = prepared
        needed = ROUTE_ROLES[(method, template)]
        response = served.api(method, path, token=CALLERS[caller], json=body)
        got = response.status_code
        if caller in ("none", "wrong"):
            ok = got == 401 and response.json()["error"]["code"] == "invalid_admin_token"
        elif ROLES.index(caller) < ROLES.index(needed):  # type: ignore[arg-type]
            body = response.json()["error"] if got == 403 else {}
            ok = body.get("code") == "insufficient_role" and needed in body.get("message", "")
            ok = ok and body.get("type") == "permission_error"
        else:
            ok = 200 <= got < 300
        if not ok:
            mismatches.append(f"{method} {template} (needs {needed}): {got} {response.text[:200]}")
    assert not mismatches, "\n".join(mismatches)


def test_routes_and_role_table_match_exactly(served: Served) -> None:
    """ROUTE_ROLES has one entry per /admin route of the app, and none for a route that is gone."""
    assert admin_routes(schema(served.api)) == set(ROUTE_ROLES)


# ---- each route's behaviour ------------------------------------------------------------------


def test_push_creates_then_keeps_then_refuses_changed_content(served: Served) -> None:
    """A prompt file: 201 created, 200 unchanged, 409 when a released version changed (nothing
    written); the create is audited with the token's name."""
    api = served.api
    doc = prompt_file("pushed", "Hello {{company}}.")
    first = api("POST", "/admin/prompts", EDITOR, json=doc)
    assert first.status_code == 201, first.text
    assert first.json() == [
        {"name": "pushed", "version": "1.0.0", "status": "created", "file": "request body"}
    ]
    again = api("POST", "/admin/prompts?source=prompts/pushed.yaml", EDITOR, json=doc)
    assert again.status_code == 200
    assert again.json() == [
        {
            "name": "pushed",
            "version": "1.0.0",
            "status": "unchanged",
            "file": "prompts/pushed.yaml",
        }
    ]
    before = fingerprint(api)
    changed = copy.deepcopy(doc)
    changed["versions"][0]["messages"][0]["content"] = "Hi {{company}}."
    refused = api("POST", "/admin/prompts?source=prompts/pushed.yaml", EDITOR, json=changed)
    message = error(refused, 409, "version_conflict")
    assert message.startswith("prompts/pushed.yaml: pushed@1.0.0 is already released")
    assert fingerprint(api) == before
    audit = api("GET", "/admin/audit?prompt=pushed").json()
    assert [(e["action"], e["actor"]) for e in audit] == [("version.create", "eddie")]


def test_show_and_version_answer_every_field_as_the_store_holds_it(served: Served) -> None:
    """GET a prompt and one version: each version has every field of PRODUCT §3."""
    state = asyncio.run(SQLiteStore(served.path).prompt("walk"))
    shown = served.api("GET", "/admin/prompts/walk", VIEWER).json()
    assert shown["name"] == "walk" and shown["active"] == state.active
    stored = {v.version: codec.version_to_dict(v) for v in state.versions}
    assert {v["version"]: v for v in shown["versions"]} == stored
    one = served.api("GET", "/admin/prompts/walk/versions/2.0.0", VIEWER).json()
    assert one == stored["2.0.0"]
    assert set(one) >= {"id", "number", "is_active", "is_tested", "test_results", "created_by"}


def test_render_fills_the_variables_and_names_a_missing_one(served: Served) -> None:
    """Render answers {name, version, messages}; a missing variable is a 400 naming it."""
    api = served.api
    path = "/admin/prompts/walk/versions/2.0.0/render"
    rendered = api("POST", path, VIEWER, json={"variables": {"company": "Acme"}})
    assert rendered.status_code == 200, rendered.text
    assert rendered.json() == {
        "name": "walk",
        "version": "2.0.0",
        "messages": [{"role": "system", "content": "You help Acme kindly."}],
    }
    missing = api("POST", path, VIEWER, json={"variables": {}})
    assert "company" in error(missing, 400, "missing_prompt_variables")


def test_a_test_run_gates_promotion_and_force_needs_admin(served: Served) -> None:
    """Tests run through the mock; under the threshold promote is 409 with the pass rate, an
    editor's force is 403, an admin's force is 200 and audited as forced by that token's name;
    rollback re-activates the previous version."""
    api = served.api
    doc = prompt_file("gated", "You help {{company}}.", "You are a bot.")
    assert api("POST", "/admin/prompts", EDITOR, json=doc).status_code == 201
    failing = api("POST", "/admin/prompts/gated/versions/2.0.0/test", EDITOR, json=doc)
    assert failing.status_code == 200, failing.text
    report = failing.json()
    assert (report["name"], report["version"], report["total"], report["passed"]) == (
        "gated",
        "2.0.0",
        1,
        0,
    )
    assert report["is_tested"] is False and report["threshold"] == 0.9
    assert report["failures"][0]["expectation"] == "contains"

    before = fingerprint(api)
    refused = api("POST", "/admin/prompts/gated/promote", EDITOR, json={"version": "2.0.0"})
    assert "pass rate 0%" in error(refused, 409, "promotion_refused")
    forced = {"version": "2.0.0", "force": True}
    denied = api("POST", "/admin/prompts/gated/promote", EDITOR, json=forced)
    assert "admin" in error(denied, 403, "insufficient_role")
    assert denied.json()["error"]["type"] == "permission_error"
    assert fingerprint(api) == before

    promoted = api("POST", "/admin/prompts/gated/promote", ADMIN, json=forced)
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert (body["name"], body["active"], body["changed"]) == ("gated", "2.0.0", True)
    assert (body["audit"]["actor"], body["audit"]["forced"]) == ("ada", True)

    passing = api("POST", "/admin/prompts/gated/versions/1.0.0/test", EDITOR, json=doc).json()
    assert (passing["pass_rate"], passing["is_tested"]) == (1.0, True)
    gate = api("POST", "/admin/prompts/gated/promote", EDITOR, json={"version": "1.0.0"})
    assert gate.status_code == 200 and gate.json()["audit"]["actor"] == "eddie"
    same = api("POST", "/admin/prompts/gated/promote", EDITOR, json={"version": "1.0.0"})
    assert same.json() == {
        "name": "gated",
        "active": "1.0.0",
        "previous": "1.0.0",
        "changed": False,
        "forced": False,
        "audit": None,
    }

    back = api("POST", "/admin/prompts/gated/rollback", EDITOR)
    assert back.status_code == 200, back.text
    assert (back.json()["active"], back.json()["audit"]["action"]) == ("2.0.0", "version.rollback")
    assert api("GET", "/admin/prompts/gated", VIEWER).json()["active"] == "2.0.0"
    actions = [
        (e["action"], e["actor"], e["forced"])
        for e in api("GET", "/admin/audit?prompt=gated", VIEWER).json()
    ]
    assert actions == [
        ("version.rollback", "eddie", False),
        ("version.promote", "eddie", False),
        ("version.test", "eddie", False),
        ("version.promote", "ada", True),
        ("version.test", "eddie", False),
        ("version.create", "eddie", False),
        ("version.create", "eddie", False),
    ]


def test_a_test_run_without_a_body_reads_the_servers_prompts_dir(served: Served) -> None:
    """No body: the tests of the prompt's file in prompts_dir run (support-agent's, with the
    judge answered by the mock)."""
    response = served.api("POST", "/admin/prompts/support-agent/versions/1.1.0/test", EDITOR)
    assert response.status_code == 200, response.text
    assert (response.json()["total"], response.json()["passed"]) == (2, 2)


@pytest.fixture
def cli(project: Path, served: Served) -> Callable[..., Any]:
    """Run `gateway ARGS... --json` in-process on the served gateway's store; its JSON."""
    runner = CliRunner()

    def run(*args: str) -> Any:
        env = {"GATEWAY_STORE_URL": f"sqlite:///{served.path}"}
        result = runner.invoke(cli_app, ["--actor", "tester", *args, "--json"], env=env)
        assert result.exit_code == 0, result.output
        return orjson.loads(result.stdout)

    return run


@pytest.mark.parametrize(
    ("cli_args", "path"),
    [
        (["prompts", "list"], "/admin/prompts"),
        (["prompts", "show", "walk"], "/admin/prompts/walk"),
        (["prompts", "show", "walk", "--version", "1.0.0"], "/admin/prompts/walk/versions/1.0.0"),
        (
            ["prompts", "resolve", "fixture-ab", "--env", "production", "--user", "u-7"],
            "/admin/prompts/fixture-ab/resolve?env=production&user=u-7",
        ),
        (
            ["prompts", "resolve", "walk", "--env", "development"],
            "/admin/prompts/walk/resolve?env=development",
        ),
        (
            ["prompts", "diff", "walk", "1.0.0", "2.0.0"],
            "/admin/prompts/walk/diff?from=1.0.0&to=2.0.0",
        ),
    ],
)
def test_reads_answer_what_the_cli_prints(
    served: Served, cli: Callable[..., Any], cli_args: list[str], path: str
) -> None:
    """list, show, resolve and diff answer the JSON `gateway ... --json` prints on the store."""
    assert served.api("GET", path, VIEWER).json() == cli(*cli_args)


def test_render_answers_what_the_cli_prints(served: Served, cli: Callable[..., Any]) -> None:
    """Rendering a version answers the JSON of `gateway prompts render --json`."""
    printed = cli("prompts", "render", "walk", "--version", "1.0.0", "--var", "company=Acme")
    answered = served.api(
        "POST",
        "/admin/prompts/walk/versions/1.0.0/render",
        VIEWER,
        json={"variables": {"company": "Acme"}},
    )
    assert answered.json() == printed


def test_promote_answers_what_the_cli_prints(served: Served, cli: Callable[..., Any]) -> None:
    """Promoting the active version (no change) answers the JSON of `gateway prompts promote`."""
    active = served.api("GET", "/admin/prompts/fixture-ab", VIEWER).json()["active"]
    printed = cli("prompts", "promote", "fixture-ab", active)
    body = {"version": active}
    answered = served.api("POST", "/admin/prompts/fixture-ab/promote", EDITOR, json=body)
    assert answered.json() == printed


def test_experiments_are_created_listed_shown_stopped_and_concluded(served: Served) -> None:
    """Create 201 then 200 unchanged, list, get, results, stop; conclude needs admin; each write
    audited with its token's name."""
    api = served.api
    api(
        "POST",
        "/admin/prompts",
        EDITOR,
        json=prompt_file("life", "A {{company}}.", "B {{company}}."),
    )
    body = {
        "id": "life-1",
        "prompt_name": "life",
        "control_version": "1.0.0",
        "treatment_version": "2.0.0",
        "traffic_split": 0.3,
        "metric": "task_completion",
    }
    created = api("POST", "/admin/experiments", EDITOR, json=body)
    assert created.status_code == 201, created.text
    assert (created.json()["result"], created.json()["created_by"]) == ("created", "eddie")
    again = api("POST", "/admin/experiments", EDITOR, json=body)
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")

    listed = {e["id"]: e for e in api("GET", "/admin/experiments", VIEWER).json()}
    assert listed["life-1"]["running_now"] is True and listed["life-1"]["status"] == "running"
    shown = api("GET", "/admin/experiments/life-1", VIEWER).json()
    assert shown == listed["life-1"]
    results = api("GET", "/admin/experiments/life-1/results", VIEWER).json()
    assert (results["experiment"], results["metric"], results["test"]) == (
        "life-1",
        "task_completion",
        "two_proportion_z",
    )
    assert results["recommendation"] == "keep_running"

    stopped = api("POST", "/admin/experiments/life-1/stop", EDITOR)
    assert (stopped.status_code, stopped.json()["status"]) == (200, "stopped")
    assert stopped.json()["stopped_at"] is not None

    second = dict(body, id="life-2")
    assert api("POST", "/admin/experiments", EDITOR, json=second).status_code == 201
    denied = api("POST", "/admin/experiments/life-2/conclude", EDITOR, json={"force": True})
    assert "admin" in error(denied, 403, "insufficient_role")
    concluded = api("POST", "/admin/experiments/life-2/conclude", ADMIN)
    assert concluded.status_code == 200, concluded.text
    conclusion = concluded.json()
    assert conclusion["promoted"] is False
    assert conclusion["experiment"]["status"] == "stopped"
    assert conclusion["results"]["experiment"] == "life-2"
    actions = [(e["action"], e["actor"]) for e in api("GET", "/admin/audit?prompt=life").json()]
    assert actions[:4] == [
        ("experiment.conclude", "ada"),
        ("experiment.create", "eddie"),
        ("experiment.stop", "eddie"),
        ("experiment.create", "eddie"),
    ]


def test_audit_is_newest_first_and_limited(served: Served) -> None:
    """GET /admin/audit?prompt=N&limit=K: the K newest entries of N, newest first."""
    stored = asyncio.run(SQLiteStore(served.path).audit(prompt_name="walk", limit=3))
    answered = served.api("GET", "/admin/audit?prompt=walk&limit=3", VIEWER).json()
    assert answered == [codec.audit_to_dict(e) for e in reversed(stored)]
    assert len(answered) == 3
    times = [e["at"] for e in answered]
    assert times == sorted(times, reverse=True)
    everything = served.api("GET", "/admin/audit?limit=1000", VIEWER).json()
    assert {e["prompt_name"] for e in everything} > {"walk"}


# ---- bad input: a clear 4xx, nothing written --------------------------------------------------

BIG = b'{"name": "big", "content": "' + b"x" * (2 * 1024 * 1024) + b'"}'
OVERLAP = {
    "id": "overlap",
    "prompt_name": "fixture-ab",
    "control_version": "1.0.0",
    "treatment_version": "2.0.0",
    "traffic_split": 0.2,
    "metric": "user_satisfaction",
}


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "status", "code", "says"),
    [
        (
            "POST",
            "/admin/prompts",
            {"content": b'{"name": '},
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (
            "POST",
            "/admin/prompts/walk/promote",
            {"content": b"{version: 1.0.0}"},
            400,
            "invalid_json",
            "not valid JSON",
        ),
        (
            "POST",
            "/admin/prompts",
            {"json": {"name": "bad", "version": "1.0.0", "content": "x", "temprature": 0.2}},
            400,
            "invalid_prompt",
            "unknown field temprature",
        ),
        (
            "POST",
            "/admin/prompts",
            {"json": {"name": "bad", "version": 1.2, "content": "x"}},
            400,
            "invalid_prompt",
            "version must be a quoted string",
        ),
        (
            "POST",
            "/admin/prompts",
            {"json": {"name": "Bad Name", "version": "1.0.0", "content": "x"}},
            400,
            "invalid_prompt",
            "Prompt name 'Bad Name' is invalid",
        ),
        ("POST", "/admin/prompts", {"json": [1, 2]}, 400, "invalid_prompt", "must be a mapping"),
        ("POST", "/admin/prompts", {"content": BIG}, 413, "request_too_large", "limit"),
        ("GET", "/admin/prompts/wakl", {}, 404, "prompt_not_found", "Did you mean: walk?"),
        (
            "GET",
            "/admin/prompts/walk/versions/1.0.1",
            {},
            404,
            "version_not_found",
            "no version '1.0.1'. Known versions: 1.0.0, 2.0.0. Did you mean: 1.0.0",
        ),
        (
            "POST",
            "/admin/prompts/walk/promote",
            {"json": {"version": "9.9.9"}},
            404,
            "version_not_found",
            "Known versions: 1.0.0, 2.0.0",
        ),
        (
            "POST",
            "/admin/prompts/walk/promote",
            {"json": {"version": 1}},
            400,
            "invalid_request",
            "'version'",
        ),
        (
            "POST",
            "/admin/prompts/walk/promote",
            {"json": {"version": "1.0.0", "forse": True}},
            400,
            "invalid_request",
            "forse",
        ),
        (
            "POST",
            "/admin/prompts/wakl/rollback",
            {},
            404,
            "prompt_not_found",
            "Did you mean: walk?",
        ),
        (
            "GET",
            "/admin/prompts/walk/diff?from=1.0.0",
            {},
            400,
            "invalid_request",
            "'to'",
        ),
        ("GET", "/admin/audit?limit=0", {}, 400, "invalid_request", "'limit'"),
        (
            "GET",
            "/admin/experiments/fixed-exq",
            {},
            404,
            "experiment_not_found",
            "Did you mean: fixed-exp?",
        ),
        (
            "POST",
            "/admin/experiments",
            {"json": OVERLAP},
            409,
            "experiment_conflict",
            "'fixed-exp' is already running",
        ),
        (
            "POST",
            "/admin/experiments",
            {"json": OVERLAP | {"start": "2030-01-01T00:00:00"}},
            400,
            "invalid_prompt",
            "no timezone",
        ),
        (
            "POST",
            "/admin/experiments",
            {"json": OVERLAP | {"traffic_split": 3}},
            400,
            "invalid_experiment",
            "traffic_split",
        ),
        (
            "POST",
            "/admin/experiments",
            {"json": OVERLAP | {"prompt_name": "fixture-ba"}},
            404,
            "prompt_not_found",
            "Did you mean: fixture-ab?",
        ),
        (
            "POST",
            "/admin/experiments/fixed-exq/stop",
            {},
            404,
            "experiment_not_found",
            "fixed-exp",
        ),
    ],
)
def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    served: Served,
    method: str,
    path: str,
    request_kwargs: dict[str, Any],
    status: int,
    code: str,
    says: str,
) -> None:
    """Malformed JSON, prompt files with errors, unknown names, oversized bodies, overlapping
    experiments: OpenAI's error shape, a message that says what is wrong, no change."""
    before = fingerprint(served.api)
    headers = {"content-type": "application/json"} if "content" in request_kwargs else {}
    response = served.api(method, path, ADMIN, headers=headers, **request_kwargs)
    message = error(response, status, code)
    assert says in message
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fingerprint(served.api) == before


# ---- /schema ----------------------------------------------------------------------------------


def test_schema_is_valid_openapi_3_1_and_lists_every_route(served: Served) -> None:
    """/schema/openapi.json validates as OpenAPI 3.1 and lists each route of the role table."""
    doc = schema(served.api)
    assert doc["openapi"].startswith("3.1")
    validate_openapi(doc)
    assert admin_routes(doc) == set(ROUTE_ROLES)
    assert served.api("GET", "/schema", token=None).status_code == 200


def test_every_admin_response_is_typed(served: Served) -> None:
    """Each /admin operation names its success model, its body model and OpenAI's error body, and
    asks for the bearer token."""
    doc = schema(served.api)
    untyped = []
    for path, item in doc["paths"].items():
        if not path.startswith("/admin"):
            continue
        for method, operation in item.items():
            assert operation["security"] == [{"adminToken": []}]
            for status, response in operation["responses"].items():
                shape = response["content"]["application/json"]["schema"]
                ref = shape.get("$ref") or shape.get("items", {}).get("$ref")
                if ref is None or (status >= "400" and ref != "#/components/schemas/ErrorBody"):
                    untyped.append(f"{method} {path} {status}: {shape}")
            body = operation.get("requestBody")
            if body is not None:
                shape = body["content"]["application/json"]["schema"]
                if not body["required"] and "oneOf" in shape:  # optional: the model or null
                    shape = shape["oneOf"][0]
                assert "$ref" in shape, (method, path)
    assert not untyped, "\n".join(untyped)
    assert doc["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"


def test_the_shipped_prompt_files_fit_the_documented_prompt_file(served: Served) -> None:
    """Each file in config/prompts, as JSON, validates against the schema's PromptFile."""
    doc = schema(served.api)
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/PromptFile", "components": doc["components"]}
    )
    files = sorted((ROOT / "config/prompts").glob("*.yaml"))
    assert files
    for path in files:
        validator.validate(yaml.safe_load(path.read_text()))


NOW = datetime(2030, 1, 1, tzinfo=UTC)
CODEC_SHAPES: list[tuple[type[Any], dict[str, Any]]] = [
    (
        admin_models.PromptVersionOut,
        codec.version_to_dict(
            model.PromptVersion(
                "id",
                "p",
                "1.0.0",
                1,
                (Message("system", "Hi"),),
                (),
                None,
                None,
                None,
                (),
                NOW,
                "me",
            )
        ),
    ),
    (admin_models.AuditOut, codec.audit_to_dict(model.AuditEntry(NOW, "me", "x", "p"))),
    (
        admin_models.ExperimentOut,
        codec.experiment_to_dict(
            model.Experiment(
                "e", "p", "1.0.0", "2.0.0", 0.5, NOW, None, "latency", "running", NOW, "me"
            )
        ),
    ),
    (admin_models.TestResultsOut, codec.results_to_dict(PASSED)),
]


@pytest.mark.parametrize(("struct", "doc"), CODEC_SHAPES, ids=lambda v: getattr(v, "__name__", ""))
def test_response_models_have_exactly_the_codecs_keys(
    struct: type[Any], doc: dict[str, Any]
) -> None:
    """The API's typed models and the CLI's codec dicts have the same keys (so one cannot grow a
    field the other drops)."""
    assert {f.encode_name for f in msgspec.structs.fields(struct)} == set(doc)


# ---- secrets ------------------------------------------------------------------------------------


def test_tokens_never_appear_in_logs_spans_audit_or_error_bodies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session using every token (right, wrong, too low a role, malformed headers): the logs,
    the access log, the OTLP export, the audit log, the store, /metrics and every response body
    hold no token."""
    receiver = OtlpReceiver()
    loggers = [logging.getLogger(n) for n in ("gateway.access", "litestar", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    gateway, path = serve(
        tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="50"
    )
    api = Api(gateway.url)
    bodies: list[str] = []
    try:
        for token in (VIEWER, EDITOR, ADMIN, WRONG):
            for method, path_, body in (
                ("GET", "/admin/prompts", None),
                ("POST", "/admin/prompts", WALK),
                ("POST", "/admin/prompts/walk/promote", {"version": "2.0.0"}),
                ("POST", "/admin/prompts/walk/rollback", None),
                ("POST", "/admin/prompts/walk/promote", {"version": "2.0.0", "force": True}),
                ("POST", "/admin/experiments/fixed-exp/conclude", None),
                ("GET", "/admin/prompts/nope", None),
            ):
                bodies.append(api(method, path_, token, json=body).text)
            for header in (f"Basic {token}", token, f"Bearer  {token}x"):
                raw = httpx.get(gateway.url + "/admin/audit", headers={"authorization": header})
                bodies.append(raw.text)
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0) as sdk:
            raw_call = sdk.chat.completions.with_raw_response.create(
                model="mock-model",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"prompt": {"id": "walk", "variables": {"company": "Acme"}}},
            )
        receiver.wait_for(raw_call.headers["x-request-id"])
        bodies.append(api("GET", "/admin/audit?limit=1000").text)
        bodies.append(httpx.get(gateway.url + "/metrics").text)
    finally:
        gateway.stop()
        receiver.stop()
        for logger in loggers:
            logger.removeHandler(caplog.handler)
    audit = asyncio.run(SQLiteStore(path).audit(limit=1000))
    assert {e.actor for e in audit} >= {"eddie", "ada"}
    assert any("walk" in r.getMessage() for r in caplog.records)
    places = {
        "logs": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
        "spans": b"".join(receiver.raw).decode("latin-1"),
        "audit": "\n".join(str(codec.audit_to_dict(e)) for e in audit),
        "store": path.read_bytes().decode("latin-1"),
        "responses": "\n".join(bodies),
    }
    assert receiver.raw, "no span was exported"
    for token in (VIEWER, EDITOR, ADMIN, WRONG):
        found = {where: text.count(token) for where, text in places.items() if token in text}
        assert not found, f"token found: {found}"


def test_resolve_applies_the_servers_prompt_overrides_to_its_own_environment_only(
    tmp_path: Path,
) -> None:
    """PROMPT_OVERRIDES belong to the serving process's environment (PRODUCT §4, "for this
    process"): a production gateway's resolve for staging does not apply them, as its console's
    staging column does not; for production it does."""
    gateway, _ = serve(tmp_path, PROMPT_OVERRIDES='{"walk": "2.0.0"}', GATEWAY_ENV="production")
    try:
        api = Api(gateway.url)
        own = api("GET", "/admin/prompts/walk/resolve?env=production").json()
        other = api("GET", "/admin/prompts/walk/resolve?env=staging").json()
    finally:
        gateway.stop()
    assert (own["version"], own["resolution"]) == ("2.0.0", "override")
    assert (other["version"], other["resolution"]) == ("2.0.0", "environment")


async def test_a_test_run_without_prompt_files_names_prompts_dir(tmp_path: Path) -> None:
    """The server takes a stored run's tests from its prompts_dir; when that folder is missing
    the answer says which setting to fix, not only that a path does not exist."""
    from gateway.errors import InvalidRequest
    from gateway.testing import served_tests

    config = tmp_path / "gateway.yaml"
    config.write_text(f"prompts_dir: {tmp_path / 'nowhere'}\n")
    settings = load(config, {"GATEWAY_UPSTREAM_URL": "mock"})
    with pytest.raises(InvalidRequest, match="the server's prompts_dir"):
        await served_tests(settings, "walk")
