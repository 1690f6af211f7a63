"""Promotions and rollbacks racing through the admin API, on SQLite and on Redis.

Four client processes (httpx) hammer one prompt through two gateways sharing one store, while this
process samples the registry through the API: the store's atomic plans must keep exactly one
active version at every moment, audit every change, and never answer 500.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.api.app import create_app
from gateway.core.model import TestResults as Results
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.prompts import PromptRegistry
from gateway.settings import load
from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore
from tests.servers import ServedGateway

EDITOR = "race-editor-token-5d1f0c"
VIEWER = "race-viewer-token-9a3e7b"
TOKENS = f"racer:editor:{EDITOR},watcher:viewer:{VIEWER}"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0")
CLIENTS = 4
EACH = 50  # promotions and as many rollbacks per client

CLIENT = """
import random, sys
import httpx, orjson

url, token, name, count, seed, versions = sys.argv[1:7]
rng = random.Random(int(seed))
statuses, changes, failures = {}, 0, []
with httpx.Client(base_url=url, headers={"authorization": "Bearer " + token}, timeout=30) as c:
    for i in range(2 * int(count)):
        if i % 2 == 0:
            body = {"version": rng.choice(versions.split(","))}
            r = c.post(f"/admin/prompts/{name}/promote", json=body)
            changed = r.status_code == 200 and r.json()["changed"]
        else:
            r = c.post(f"/admin/prompts/{name}/rollback")
            changed = r.status_code == 200
        changes += changed
        statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
        if r.status_code >= 500 or r.json().get("error", {}).get("type") == "server_error":
            failures.append(r.text)
report = {"statuses": statuses, "changes": changes, "failures": failures}
sys.stdout.write(orjson.dumps(report).decode())
"""


async def prepare(store: Store) -> None:
    """Prompt `race`: four tested versions, 1.0.0 active."""
    registry = PromptRegistry(store, threshold=0.9)
    passed = Results(total=1, passed=1, failed=0, pass_rate=1.0)
    try:
        for version in VERSIONS:
            draft = make_draft(
                name="race", version=version, messages=[Message("system", f"Version {version}.")]
            )
            await registry.create_version(draft, actor="setup")
            await registry.record_test_run("race", version, passed, actor="setup")
        await registry.promote("race", "1.0.0", actor="setup")
    finally:
        await store.close()


async def changes_audited(store: Store) -> int:
    """Promotions and rollbacks of `race` in the audit log."""
    try:
        entries = await store.audit(prompt_name="race", limit=100_000)
        return sum(e.action in ("version.promote", "version.rollback") for e in entries)
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "redis"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str
) -> Iterator[tuple[str, Any]]:
    """A fresh registry of each backend; yields its kind and a factory of store objects."""
    if request.param == "sqlite":
        path = tmp_path / "race.db"
        yield "sqlite", lambda: SQLiteStore(path)
        return
    url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of this test's own

    async def flush() -> None:
        store = RedisStore(url)
        await store._client.flushdb()
        await store.close()

    asyncio.run(flush())
    yield "redis", lambda: RedisStore(url)
    asyncio.run(flush())


def test_racing_promotions_keep_one_active_version_and_audit_every_change(
    stores: tuple[str, Any], tmp_path: Path
) -> None:
    """4 processes x (50 promotions + 50 rollbacks) through two gateways on one store: one active
    version at every sample, each change in the audit log, no 5xx."""
    kind, make_store = stores
    asyncio.run(prepare(make_store()))
    audited_before = asyncio.run(changes_audited(make_store()))
    config = tmp_path / "gateway.yaml"
    config.write_text("")
    settings = load(
        config,
        {
            "GATEWAY_UPSTREAM_URL": "mock",
            "GATEWAY_ADMIN_TOKENS": TOKENS,
            "GATEWAY_SNAPSHOT_PATH": str(tmp_path / "gateway.snapshot.json"),
        },
    )
    gateways = [ServedGateway(create_app(settings, store=make_store())) for _ in range(2)]
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    started = time.monotonic()
    try:
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    gateways[i % 2].url,
                    EDITOR,
                    "race",
                    str(EACH),
                    str(i),
                    ",".join(VERSIONS),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(CLIENTS)
        ]
        samples: list[list[str]] = []
        deadline = started + 60
        while any(c.poll() is None for c in clients):
            assert time.monotonic() < deadline, "the clients did not finish within 60 s"
            url = gateways[len(samples) % 2].url + "/admin/prompts/race"
            shown = httpx.get(url, headers={"authorization": f"Bearer {VIEWER}"}, timeout=30)
            assert shown.status_code == 200, shown.text
            body = shown.json()
            active = [v["version"] for v in body["versions"] if v["is_active"]]
            assert active == [body["active"]], f"sample {len(samples)}: {body['active']}, {active}"
            samples.append(active)
        reports = []
        for client in clients:
            out, err = client.communicate(timeout=10)
            assert client.returncode == 0, err.decode()
            reports.append(orjson.loads(out))
    finally:
        for gateway in gateways:
            gateway.stop()
    elapsed = time.monotonic() - started
    assert len(samples) >= 10, f"only {len(samples)} samples on {kind}"
    statuses: dict[str, int] = {}
    for report in reports:
        assert not report["failures"], report["failures"][:3]
        for status, n in report["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    assert sum(statuses.values()) == CLIENTS * EACH * 2
    assert set(statuses) <= {"200", "409"}, statuses  # 409: nothing left to roll back
    changes = sum(report["changes"] for report in reports)
    assert changes > CLIENTS * EACH // 2
    assert asyncio.run(changes_audited(make_store())) - audited_before == changes
    assert elapsed < 30, f"{kind}: {elapsed:.1f} s"
