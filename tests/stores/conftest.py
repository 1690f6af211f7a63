"""The store fixtures: each contract test runs once on SQLite and once on a real Redis server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore


@dataclass(frozen=True)
class Backend:
    """How to open one store, picklable so other processes can open the same one."""

    kind: str
    location: str
    prefix: str = ""

    def open(self) -> Store:
        if self.kind == "sqlite":
            return SQLiteStore(self.location, poll_interval=0.05)
        return RedisStore(self.location, prefix=self.prefix, poll_interval=0.1)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "gateway.db"))
    redis_url: str = request.getfixturevalue("redis_url")
    return Backend("redis", redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}:")


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = backend.open()
    yield opened
    await opened.close()
