"""The snapshot cache: changes from elsewhere within a second; the last good snapshot in outages."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.core.model import RegistrySnapshot
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.prompts import PromptRegistry
from gateway.stores.base import Store
from gateway.stores.cached import SnapshotCache, SnapshotFile
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore
from tests.conftest import RedisServer


def draft(ver: str):  # type: ignore[no-untyped-def]
    return make_draft(name="greeter", version=ver, messages=[Message("system", "Hello")])


async def eventually(check: Callable[[], bool], within: float) -> float:
    """Poll `check` until it holds; return how long it took, or fail after `within` seconds."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"condition still false after {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_change_by_another_connection_is_visible_within_a_second(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A version created through another store connection reaches the cache in under 1 s."""

    def open_store() -> Store:
        if kind == "sqlite":
            return SQLiteStore(tmp_path / "g.db")
        return RedisStore(request.getfixturevalue("redis_url"), prefix=f"{tmp_path.name}:")

    reader, writer = open_store(), open_store()
    cache = SnapshotCache(reader)
    await cache.start()
    assert cache.healthy and dict(cache.current.prompts) == {}
    await PromptRegistry(writer, threshold=0.9).create_version(draft("1.0.0"), actor="t")
    took = await eventually(lambda: "greeter" in cache.current.prompts, within=1.0)
    assert took < 1.0
    await cache.stop()
    await reader.close()
    await writer.close()


async def test_outage_serves_the_last_snapshot_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis down the cache keeps its snapshot, warns once, and recovers when it returns."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is needed for this test"
    server = RedisServer(binary)
    store = RedisStore(server.url, poll_interval=0.1)
    await PromptRegistry(store, threshold=0.9).create_version(draft("1.0.0"), actor="t")
    cache = SnapshotCache(store, max_backoff=0.2)
    await cache.start()
    before = cache.current
    assert "greeter" in before.prompts

    caplog.set_level(logging.WARNING, logger="gateway.registry")
    server.stop()
    await eventually(lambda: not cache.healthy, within=5)
    await asyncio.sleep(1.0)  # several retries happen meanwhile
    assert cache.current is before
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1

    revived = RedisServer(binary, port=server.port)  # an empty server: the data went with it
    writer = RedisStore(revived.url)
    try:
        await PromptRegistry(writer, threshold=0.9).create_version(draft("2.0.0"), actor="t")
        await eventually(lambda: cache.healthy, within=5)
        assert set(cache.current.prompts["greeter"].by_version) == {"2.0.0"}
    finally:
        await cache.stop()
        await store.close()
        await writer.close()
        revived.stop()


async def test_a_store_that_lost_its_data_does_not_empty_the_gateway(tmp_path: Path) -> None:
    """Redis restarted empty: the cache keeps serving what it had and says it is stale, until
    the prompts are pushed again."""
    binary = shutil.which("redis-server")
    assert binary is not None
    server = RedisServer(binary)
    store = RedisStore(server.url, poll_interval=0.05)
    cache = SnapshotCache(store)
    try:
        registry = PromptRegistry(store, threshold=0.9)
        await registry.create_version(draft("1.0.0"), actor="t")
        await cache.start()
        await eventually(lambda: "greeter" in cache.current.prompts, within=2)
        await store._client.flushall()  # what a restart without persistence leaves
        await eventually(lambda: cache.stale, within=2)
        assert "greeter" in cache.current.prompts and cache.loaded
        await registry.create_version(draft("1.0.0"), actor="t")  # pushed again
        await eventually(lambda: not cache.stale, within=2)
        assert "greeter" in cache.current.prompts
    finally:
        await cache.stop()
        await store.close()
        server.stop()


async def test_stopping_a_watcher_mid_poll_is_safe(tmp_path: Path) -> None:
    """Cancelling the SQLite watcher while its thread queries never closes the connection under
    the query (that crashed the interpreter): 100 quick start/stop cycles."""
    store = SQLiteStore(tmp_path / "g.db", poll_interval=0.0005)
    await PromptRegistry(store, threshold=0.9).create_version(draft("1.0.0"), actor="t")
    for _ in range(100):
        cache = SnapshotCache(store)
        await cache.start()
        await asyncio.sleep(0.002)
        await cache.stop()
    assert "greeter" in cache.current.prompts


async def test_each_new_revision_is_written_to_the_snapshot_file(tmp_path: Path) -> None:
    """The file follows the store: written after the first load and after every change, and
    read back as the snapshot served."""
    store = SQLiteStore(tmp_path / "g.db", poll_interval=0.02)
    disk = SnapshotFile(tmp_path / "snap.json", source=store.location)
    cache = SnapshotCache(store, disk=disk)
    registry = PromptRegistry(store, threshold=0.9)
    try:
        await registry.create_version(draft("1.0.0"), actor="t")
        await cache.start()
        await eventually(lambda: disk.path.exists(), within=2)
        assert disk.read() == cache.current
        await registry.create_version(draft("1.1.0"), actor="t")
        await eventually(lambda: (disk.read() or cache.current).revision == "2", within=2)
        assert disk.read() == cache.current
    finally:
        await cache.stop()
        await store.close()


async def test_a_process_started_while_the_store_is_down_serves_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down at start: the file's snapshot serves (from_disk, not healthy); Redis back with
    less than the file holds: still served, stale; a newer revision: taken and written."""
    binary = shutil.which("redis-server")
    assert binary is not None
    server = RedisServer(binary)
    store = RedisStore(server.url, poll_interval=0.05)
    disk = SnapshotFile(tmp_path / "snap.json", source=store.location)
    registry = PromptRegistry(store, threshold=0.9)
    await registry.create_version(draft("1.0.0"), actor="t")
    first = SnapshotCache(store, disk=disk)
    await first.start()
    await eventually(lambda: disk.path.exists(), within=2)
    await first.stop()
    server.stop()

    caplog.set_level(logging.WARNING, logger="gateway.registry")
    cache = SnapshotCache(store, disk=disk)
    await cache.start()
    try:
        assert cache.loaded and cache.from_disk and not cache.healthy
        assert set(cache.current.prompts["greeter"].by_version) == {"1.0.0"}
        assert any("serving the snapshot file" in r.getMessage() for r in caplog.records)

        server = RedisServer(binary, port=server.port)  # back empty
        await eventually(lambda: cache.healthy, within=2)
        assert cache.stale and cache.from_disk and "greeter" in cache.current.prompts
        await registry.create_version(draft("1.0.0"), actor="t")
        await registry.create_version(draft("2.0.0"), actor="t")  # now holds more than the file
        await eventually(lambda: "2.0.0" in cache.current.prompts["greeter"].by_version, 2)
        assert not cache.stale and not cache.from_disk
        await eventually(lambda: disk.read() == cache.current, within=2)
    finally:
        await cache.stop()
        await store.close()
        server.stop()


@pytest.mark.parametrize(
    ("content", "logged"),
    [
        (b"{half a file", "is not JSON"),
        (b'{"format": "prompt-gateway-snapshot", "format_version": 1}', "not a complete"),
        (None, "was read from another store"),
    ],
)
async def test_a_bad_or_foreign_snapshot_file_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes | None, logged: str
) -> None:
    """A corrupt file, or one of another store, is logged and not served: /readyz stays 503
    until the store answers, as without a file."""
    path = tmp_path / "snap.json"
    if content is None:
        other = SnapshotFile(path, source="redis://elsewhere:6379/0 prefix pg:")
        other.write(RegistrySnapshot({}, "7"))
    else:
        path.write_bytes(content)
    store = RedisStore("redis://127.0.0.1:1/0")
    cache = SnapshotCache(store, disk=SnapshotFile(path, source=store.location))
    caplog.set_level(logging.WARNING, logger="gateway.registry")
    await cache.start()
    try:
        assert not cache.loaded and not cache.from_disk
        assert any(logged in r.getMessage() for r in caplog.records)
    finally:
        await cache.stop()
        await store.close()
