"""How `gateway serve` sizes its per-worker limits from the settings and the fd limit."""

from __future__ import annotations

import pickle
import resource
from pathlib import Path

import pytest

from gateway.api.server import (
    AUTO_CONNECTIONS_CAP,
    ServerLimits,
    auto_max_connections,
    limits_for,
    protocol_factory,
    raise_fd_limit,
)
from gateway.settings import load


@pytest.mark.parametrize(
    ("fd_limit", "pool_size", "expected"),
    [
        (256, 512, 256 - 32 - 64),  # the pool gets at most a quarter
        (1024, 512, 1024 - 32 - 256),
        (4096, 512, 4096 - 32 - 512),
        (1 << 20, 512, AUTO_CONNECTIONS_CAP),
        (40, 512, 16),  # never fewer than 16
    ],
)
def test_auto_connections_leave_room_for_the_pool_and_the_rest(
    fd_limit: int, pool_size: int, expected: int
) -> None:
    """auto = fd limit - 32 reserved - the provider pool (at most a quarter), within 16..cap."""
    assert auto_max_connections(fd_limit, pool_size) == expected


def test_limits_follow_the_settings(tmp_path: Path) -> None:
    """A configured max_connections is used as is; auto is sized from the fd limit given."""
    path = tmp_path / "gateway.yaml"
    path.write_text("server: {header_timeout: 3, body_timeout: 4, max_connections: 77}\n")
    assert limits_for(load(path, {}), 1024) == ServerLimits(
        header_timeout=3.0, body_timeout=4.0, max_connections=77
    )
    assert limits_for(load(None, {}), 1024).max_connections == auto_max_connections(1024, 512)


def test_the_protocol_factory_pickles_for_worker_processes() -> None:
    """uvicorn sends its config, `http=` included, to each worker process by pickling it."""
    factory = protocol_factory(ServerLimits(max_connections=5))
    assert pickle.loads(pickle.dumps(factory)).args == (ServerLimits(max_connections=5),)


def test_raising_the_fd_limit_reaches_the_hard_limit() -> None:
    """The soft RLIMIT_NOFILE ends at the hard limit (here already there, or raised to it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = raise_fd_limit()
    assert soft == hard or hard == resource.RLIM_INFINITY
