"""`gateway store export` / `restore`: a registry moved from SQLite to Redis by the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import Gateway

pytestmark = pytest.mark.local_only  # store commands open the store, never a gateway's /admin


@pytest.fixture
def empty_redis(redis_url: str) -> str:
    """A database of this file's own on the session's redis-server, flushed."""
    url = redis_url.rsplit("/", 1)[0] + "/11"

    async def flush() -> None:
        client = aioredis.Redis.from_url(url)
        await client.flushdb()
        await client.aclose()

    asyncio.run(flush())
    return url


def fill(gateway: Gateway) -> None:
    """The shipped prompts pushed, one tested by force and promoted, an experiment running."""
    gateway("prompts", "push")
    gateway("prompts", "promote", "support-agent", "1.0.0", "--force")
    gateway(
        "experiments",
        *("create", "--id", "tone", "--prompt", "support-agent"),
        *("--control", "1.0.0", "--treatment", "1.1.0", "--split", "0.5"),
    )


def test_export_then_restore_into_an_empty_redis(
    gateway: Gateway, project: Path, empty_redis: str
) -> None:
    """A registry exported from SQLite and restored into an empty Redis resolves the same for
    every user and keeps every audit entry, in order."""
    fill(gateway)
    exported = gateway("store", "export", "registry.json", "--json")
    assert exported["result"] == "exported" and exported["store"].endswith("gateway.db")
    assert (exported["prompts"], exported["versions"], exported["experiments"]) == (3, 4, 1)
    doc = orjson.loads((project / "registry.json").read_bytes())
    assert doc["format"] == "prompt-gateway-registry" and len(doc["audit"]) == exported["audit"]

    redis_env = {"GATEWAY_STORE_URL": empty_redis}
    restored = gateway("store", "restore", "registry.json", "--json", env=redis_env)
    assert restored["result"] == "restored" and restored["revision"] == exported["revision"] + 1
    assert {k: restored[k] for k in ("prompts", "versions", "experiments", "audit")} == {
        k: exported[k] for k in ("prompts", "versions", "experiments", "audit")
    }
    for user in ("ann", "bob", "cy", "dee", "eve"):
        args = ("prompts", "resolve", "support-agent", "--user", user, "--json")
        assert gateway(*args, env=redis_env) == gateway(*args)
    limit = ("audit", "--limit", "1000", "--json")
    assert gateway(*limit, env=redis_env) == gateway(*limit)
    assert gateway("experiments", "list", "--json", env=redis_env) == gateway(
        "experiments", "list", "--json"
    )


def test_restore_refuses_a_store_with_a_registry(gateway: Gateway) -> None:
    """Restoring into the store it came from is refused in one line, exit 1, nothing written."""
    fill(gateway)
    gateway("store", "export", "registry.json")
    before = gateway("audit", "--json")
    result = gateway("store", "restore", "registry.json", ok=False)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not empty" in lines[0] and "only into an empty store" in lines[0]
    failed = gateway("store", "restore", "registry.json", "--json", ok=False)
    assert orjson.loads(failed.stdout)["error"]["code"] == "store_not_empty"
    assert gateway("audit", "--json") == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Cannot read missing.json: No such file or directory."),
        (b"{", "missing.json is not JSON"),
        (b'{"format": "other"}', "missing.json is not a prompt-gateway-registry file"),
    ],
)
def test_a_bad_file_is_one_line(
    gateway: Gateway, project: Path, content: bytes | None, message: str
) -> None:
    """A missing, unreadable or foreign file is refused in one line naming it."""
    if content is not None:
        (project / "missing.json").write_bytes(content)
    result = gateway("store", "restore", "missing.json", ok=False)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_export_human_output(gateway: Gateway) -> None:
    """Without --json, export says what it wrote in one line."""
    fill(gateway)
    result = gateway("store", "export", "registry.json")
    assert result.stdout.startswith("exported revision ")
    assert "to registry.json: 3 prompts, 4 versions, 1 experiments" in result.stdout


def _first(doc: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(p for p in doc["prompts"] if p["name"] == name)


def _active_unknown(doc: dict) -> None:  # type: ignore[type-arg]
    _first(doc, "support-agent")["active"] = "8.8.8"


def _control_unknown(doc: dict) -> None:  # type: ignore[type-arg]
    _first(doc, "support-agent")["experiments"][0]["control_version"] = "7.7.7"


def _version_twice(doc: dict) -> None:  # type: ignore[type-arg]
    versions = _first(doc, "support-agent")["versions"]
    versions[1]["version"] = versions[0]["version"]


def _split_out_of_range(doc: dict) -> None:  # type: ignore[type-arg]
    _first(doc, "support-agent")["experiments"][0]["traffic_split"] = 5


def _prompt_twice(doc: dict) -> None:  # type: ignore[type-arg]
    doc["prompts"].append(_first(doc, "release-notes"))


def _broken_template(doc: dict) -> None:  # type: ignore[type-arg]
    _first(doc, "release-notes")["versions"][0]["messages"][0]["content"] = "{{#broken"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_active_unknown, "prompt 'support-agent': Its activation (active) names version '8.8.8'"),
        (_control_unknown, "prompt 'support-agent': Experiment 'tone': Prompt 'support-agent' "),
        (_version_twice, "prompt 'support-agent': Prompt support-agent@1.0.0 is listed twice"),
        (_split_out_of_range, "Experiment 'tone': traffic_split must be between 0 and 1, not 5"),
        (_prompt_twice, "prompt 'release-notes' is listed twice"),
        (_broken_template, "prompt 'release-notes': Prompt release-notes@1.0.0 has a system "),
    ],
)
def test_an_inconsistent_export_is_refused_before_anything_is_written(
    gateway: Gateway, project: Path, edit: object, message: str
) -> None:
    """An export the gateway could not have written (an activation or an experiment naming no
    version, a version or a prompt listed twice, a split out of range, a template that does not
    compile) is refused in one line naming the file and the entry, exit 1, no store created."""
    fill(gateway)
    gateway("store", "export", "registry.json")
    doc = orjson.loads((project / "registry.json").read_bytes())
    edit(doc)  # type: ignore[operator]
    (project / "bad.json").write_bytes(orjson.dumps(doc))
    other = {"GATEWAY_STORE_URL": "sqlite:///other.db"}
    result = gateway("store", "restore", "bad.json", ok=False, env=other)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: bad.json ") and message in lines[0]
    assert not (project / "other.db").exists()
    failed = gateway("store", "restore", "bad.json", "--json", ok=False, env=other)
    assert orjson.loads(failed.stdout)["error"]["code"] == "invalid_request"
