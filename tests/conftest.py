"""Shared fixtures: a real redis-server on a free loopback port; the command line run in-process,
on the store or through a served gateway's admin API."""

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
    """A redis-server process of the test session's own, on loopback, persisting nothing, or,
    given `data_dir`, every write to an append-only file there (fsync always), so a server
    started again on that folder comes back with its data; with `dumps_only`, only the dumps
    SAVE writes there (a server started again comes back with the data of the last SAVE)."""

    def __init__(
        self,
        binary: str,
        port: int | None = None,
        *,
        data_dir: Path | None = None,
        dumps_only: bool = False,
    ) -> None:
        self.port = port or free_port()
        persistence = ["--appendonly", "no"]
        if data_dir is not None:
            persistence = ["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "always"]
            if dumps_only:  # only what SAVE wrote comes back: a restart loses later writes
                persistence = ["--dir", str(data_dir), "--appendonly", "no"]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash, closing no connection cleanly."""
        self.process.kill()
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

BACKENDS = ("local", "remote")
"""How the CLI suites run each test: on the store, and through a served gateway's /admin."""

ADMIN_TOKEN = "tester-admin-token-0123456789"
EDITOR_TOKEN = "editor-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789"
ADMIN_TOKENS = f"tester:admin:{ADMIN_TOKEN},eddie:editor:{EDITOR_TOKEN},vera:viewer:{VIEWER_TOKEN}"
"""The served gateway's tokens; the admin one is named `tester`, the actor the local runs give,
so audit entries read the same through either backend."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "local_only: a CLI test that only makes sense against the store (serve, the process's "
        "own environment or config, raw store access); it does not run through GATEWAY_URL",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using the `gateway` fixture runs once per backend (local_only ones: local)."""
    if "cli_backend" in metafunc.fixturenames:
        local_only = metafunc.definition.get_closest_marker("local_only") is not None
        metafunc.parametrize("cli_backend", ["local"] if local_only else BACKENDS, indirect=True)


@pytest.fixture
def cli_backend(request: pytest.FixtureRequest) -> str:
    """`local` (the store) or `remote` (a served gateway through GATEWAY_URL)."""
    return str(getattr(request, "param", "local"))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped config/ in a fresh folder, as a new user's checkout would have it."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    for name in (
        "GATEWAY_CONFIG",
        "GATEWAY_STORE_URL",
        "GATEWAY_ENV",
        "PROMPT_OVERRIDES",
        "GATEWAY_URL",
        "GATEWAY_ADMIN_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def serve_project(project: Path) -> Any:
    """A gateway (tests.servers.ServedGateway) serving `project` as `gateway serve` would there:
    its config and SQLite store, with the mock provider and the ADMIN_TOKENS, on loopback."""
    from gateway.api.app import create_app
    from gateway.settings import load
    from gateway.stores.sqlite import SQLiteStore
    from tests.servers import ServedGateway  # here: tests.servers imports this module

    settings = load(
        project / "config/gateway.yaml",
        {"GATEWAY_UPSTREAM_URL": "mock", "GATEWAY_ADMIN_TOKENS": ADMIN_TOKENS},
    )
    # The admin API reads the store itself, never the snapshot, so the snapshot's change watch
    # can sleep: stopping a gateway while that watch's PRAGMA runs in its worker thread closes
    # the connection under it, which has crashed the interpreter (gateway/stores/sqlite.py,
    # SQLiteStore.changes; reported, not fixed here).
    store = SQLiteStore(project / "gateway.db", poll_interval=3600)
    return ServedGateway(create_app(settings, store=store))


@pytest.fixture
def gateway(project: Path, cli_backend: str) -> Iterator[Gateway]:
    """Run `gateway ARGS...`; return parsed JSON when --json is given, else the result (with
    `ok=False`, the result of a run that exited `exit_code`).

    With the `remote` backend, every command goes through GATEWAY_URL and GATEWAY_ADMIN_TOKEN to
    a gateway serving the same project (store, config, the mock provider); a call's `env` then
    only reaches the command line, not that server.
    """
    runner = CliRunner()
    served = serve_project(project) if cli_backend == "remote" else None

    def run(
        *args: str, ok: bool = True, env: dict[str, str] | None = None, exit_code: int = 1
    ) -> Any:
        if served is None:
            result = runner.invoke(app, ["--actor", "tester", *args], env=env)
        else:
            remote = {"GATEWAY_URL": served.url, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}
            result = runner.invoke(app, list(args), env={**remote, **(env or {})})
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code == exit_code, result.output
            return result
        return orjson.loads(result.stdout) if "--json" in args else result

    yield run
    if served is not None:
        served.stop()
