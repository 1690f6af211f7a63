"""Shared fixtures: a real redis-server on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from gateway.cli import app

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Poll until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """A redis-server process of the test session's own, on loopback, persisting nothing."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set, else a redis-server started for this session."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed and REDIS_URL is unset (apt-get install redis-server)"
        )
    server = RedisServer(binary)
    try:
        yield server.url
    finally:
        server.stop()


Gateway = Callable[..., Any]
"""Runs `gateway ARGS...` in-process (see the `gateway` fixture)."""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped config/ in a fresh folder, as a new user's checkout would have it."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    for name in ("GATEWAY_CONFIG", "GATEWAY_STORE_URL", "GATEWAY_ENV", "PROMPT_OVERRIDES"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def gateway(project: Path) -> Gateway:
    """Run `gateway ARGS...`; return parsed JSON when --json is given, else the result."""
    runner = CliRunner()

    def run(*args: str, ok: bool = True, env: dict[str, str] | None = None) -> Any:
        result = runner.invoke(app, ["--actor", "tester", *args], env=env)
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code == 1, result.output
            return result
        return orjson.loads(result.stdout) if "--json" in args else result

    return run
