"""Console pages read the app's in-memory snapshot, and still show a browser its own writes at
once: in-process, with a store whose changes the snapshot does not follow for an hour."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from gateway.api.app import create_app
from gateway.api.console import WROTE_COOKIE
from gateway.core.model import TestResults as Results  # not a pytest class
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.prompts import PromptRegistry
from gateway.settings import Settings, load
from gateway.stores.sqlite import SQLiteStore

ADMIN = "console-admin-token-0123456789"


def in_process_settings(tmp_path: Path, **environ: str) -> Settings:
    """Settings of a console test's in-process app: no config file, the mock provider, the
    admin token `ADMIN`, a snapshot file in `tmp_path`; `environ` adds or overrides."""
    (tmp_path / "none.yaml").write_text("")
    return load(
        None,
        {
            "GATEWAY_CONFIG": str(tmp_path / "none.yaml"),
            "GATEWAY_UPSTREAM_URL": "mock",
            "GATEWAY_ADMIN_TOKENS": f"ada:admin:{ADMIN}",
            "GATEWAY_SNAPSHOT_PATH": str(tmp_path / "snapshot.json"),
            **environ,
        },
    )


async def fill(path: Path) -> None:
    store = SQLiteStore(path)
    registry = PromptRegistry(store, threshold=0.9)
    passed = Results(total=1, passed=1, failed=0, pass_rate=1.0)
    for version in ("1.0.0", "1.1.0"):
        draft = make_draft(
            name="support-agent",
            version=version,
            messages=[Message("system", f"You help, version {version}.")],
            model="mock-model",
        )
        await registry.create_version(draft, actor="setup")
        await registry.record_test_run("support-agent", version, passed, actor="setup")
    await registry.promote("support-agent", "1.0.0", actor="setup")
    await store.close()


@pytest.fixture
def app_and_path(tmp_path: Path) -> Iterator[tuple[object, Path]]:
    path = tmp_path / "gateway.db"
    asyncio.run(fill(path))
    settings = in_process_settings(tmp_path)
    # The snapshot loads once at start and then, polling hourly, does not follow the store.
    yield create_app(settings, store=SQLiteStore(path, poll_interval=3600)), path


def signed_in(client: TestClient) -> str:  # type: ignore[type-arg]
    form = client.get("/ui/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    assert client.post("/ui/sign-in", data={"csrf": csrf[1], "token": ADMIN}).status_code == 200
    page = client.get("/ui/prompts/support-agent").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def production(client: TestClient) -> str:  # type: ignore[type-arg]
    page = client.get("/ui/prompts").text
    cell = re.search(r'data-env="production">\s*<span class="version">([^<]+)<', page)
    assert cell is not None, page
    return cell[1]


def test_the_page_after_a_write_shows_it_and_other_pages_use_the_snapshot(
    app_and_path: tuple[object, Path],
) -> None:
    app, _ = app_and_path
    with TestClient(app, base_url="http://127.0.0.1") as client:  # type: ignore[arg-type]
        csrf = signed_in(client)
        assert production(client) == "1.0.0"
        done = client.post(
            "/ui/prompts/support-agent/promote",
            data={"csrf": csrf, "version": "1.1.0"},
            follow_redirects=False,
        )
        assert done.status_code == 303
        assert WROTE_COOKIE in done.headers.get("set-cookie", "")
        # The browser that promoted sees it at once, on every page that reads the registry.
        assert production(client) == "1.1.0"
        assert "version.promote 1.1.0" in client.get("/ui/audit?prompt=support-agent").text
        # Another browser (no such cookie) sees the snapshot, which (polling hourly here)
        # still serves 1.0.0: the pages do not read the whole store.
        client.cookies.delete(WROTE_COOKIE)
        assert production(client) == "1.0.0"


async def test_results_are_reused_then_shown_while_computed_again_and_dropped_on_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within RESULTS_TTL the cached results answer; up to RESULTS_STALE they answer with their
    age while one background task computes them again; after forget() a computation that began
    before the change is not kept."""
    from gateway.api import console as module

    computed: list[int] = []
    gate = asyncio.Event()

    async def fake_results(store: object, experiment_id: str, settings: object) -> int:
        computed.append(len(computed))
        if len(computed) == 2:
            await gate.wait()
        return len(computed)

    clock = [1000.0]
    monkeypatch.setattr(module, "experiment_results", fake_results)
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    ctx = type("Ctx", (), {"store": None, "settings": load(None, {"GATEWAY_CONFIG": "/dev/null"})})
    console = module.Console(ctx, None, b"k" * 32, lambda: None)  # type: ignore[arg-type]
    assert await console.results("e") == (1, 0.0)
    clock[0] += 1
    assert await console.results("e") == (1, 1.0)
    clock[0] += module.RESULTS_TTL
    assert await console.results("e") == (1, 1.0 + module.RESULTS_TTL)  # shown, recomputing
    assert await console.results("e") == (1, 1.0 + module.RESULTS_TTL)  # one task only
    await asyncio.sleep(0)
    assert len(computed) == 2
    console.forget("e")  # a change while the task runs: its result is not kept
    gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await console.results("e") == (3, 0.0)
    clock[0] += module.RESULTS_STALE
    assert await console.results("e") == (4, 0.0)  # too old to show: computed first
