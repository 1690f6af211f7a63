"""What every command shares: the runtime (settings, the backend to use), output and failures.

A command asks `runtime.call` to run some work on a `Backend`: the local store when no gateway URL
is given, the admin API of the gateway at `--url` / `GATEWAY_URL` otherwise. Commands print only
what the backend answers, so their output is the same whichever backend.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console

from gateway import settings as settings_module
from gateway.cli.backend import Backend
from gateway.errors import (
    GatewayError,
    InvalidAdminToken,
    InvalidRequest,
    StoreNotFound,
    TestRunAborted,
)
from gateway.settings import Settings

T = TypeVar("T")

# Piped output is not squeezed to 80 columns: scripts use --json, people reading logs want it all.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class Runtime:
    """What every command needs: settings, loaded once, and where the registry is.

    `url` set: commands are clients of that gateway's /admin API with `token`; otherwise they
    open the store the settings name and audit writes as `actor`.
    """

    config: str | None = None
    actor: str | None = None
    """--actor as given (None: the user's login name, locally)."""
    url: str | None = None
    token: str | None = None
    _settings: Settings | None = field(default=None, repr=False)

    def reset(
        self, *, config: str | None, actor: str | None, url: str | None, token: str | None
    ) -> None:
        """Take the root options of one invocation."""
        self.config, self.actor, self.url, self.token = config, actor, url or None, token or None
        self._settings = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_module.load(self.config, os.environ)
        return self._settings

    def call(self, work: Callable[[Backend], Awaitable[T]], *, creates_store: bool = False) -> T:
        """Open the backend, run `work` with it, and close it.

        Locally, with no config file found, a SQLite store that does not exist yet is created
        only by a command that `creates_store` (saying so on stderr, with where the config was
        looked for); any other command fails with StoreNotFound naming both, and says on stderr
        when the store holds no prompt (`gateway serve` there makes an empty one).
        """
        if self.url is None:
            self.check_store(creates_store)

        async def main() -> T:
            backend = await self._open()
            try:
                if not creates_store:
                    await self._note_empty(backend)
                return await work(backend)
            finally:
                await backend.close()

        return asyncio.run(main())

    def check_store(self, creates_store: bool) -> None:
        """With no config file found, refuse (StoreNotFound) to read a SQLite store that does
        not exist, or say on stderr that a new one is being created: the default
        `./gateway.db` of a command run in the wrong folder would hide the mistake."""
        settings = self.settings
        path = settings.sqlite_path()
        if path is None or path.exists() or settings.source is not None:
            return  # (a config file that names the store may have it created)
        where = settings.sources(Path.cwd())
        if not creates_store:
            raise StoreNotFound(
                f"No registry at {path.absolute()} (store {settings.store_url}; {where}). Run "
                "from the project's folder, or push prompts first: gateway prompts push PATH."
            )
        err.print(f"note: creating a new registry at {path.absolute()} ({where})", markup=False)

    async def _note_empty(self, backend: Backend) -> None:
        """With no config file found, say on stderr where it was looked for when the default
        SQLite store holds no prompt: an empty table alone would hide a wrong working directory
        as surely as a missing file does (`check_store`)."""
        from gateway.cli.local import LocalBackend

        settings = self.settings
        path = settings.sqlite_path()
        if path is None or settings.source is not None or not isinstance(backend, LocalBackend):
            return
        if not (await backend.store.snapshot()).prompts:
            err.print(
                f"note: the registry at {path.absolute()} holds no prompts "
                f"({settings.sources(Path.cwd())}); push some: gateway prompts push PATH",
                markup=False,
            )

    async def _open(self) -> Backend:
        if self.url is None:
            from gateway.cli.local import LocalBackend

            return await LocalBackend.open(self.settings, actor=self.actor or _whoami())
        if self.actor is not None:
            raise InvalidRequest(
                "--actor applies to the local store only: through the admin API "
                f"({self.url}) every write is audited under the admin token's name.",
                param="actor",
            )
        if self.token is None:
            raise InvalidAdminToken(
                f"The gateway URL is set ({self.url}) but no admin token: set "
                "GATEWAY_ADMIN_TOKEN (or give --token before the command)."
            )
        from gateway.cli.remote import RemoteBackend

        return RemoteBackend(self.url, self.token)


runtime = Runtime()


def _whoami() -> str:
    try:
        return getpass.getuser()
    except OSError:
        return "cli"


def emit(data: Any) -> None:
    """Print `data` as JSON on stdout."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextmanager
def failures(as_json: bool = False) -> Iterator[None]:
    """Exit 1 with a one-line reason on stderr, or with `{"error": {"message", "code"}}` on
    stdout when the command was asked for JSON; exit 2 when tests could not reach a provider
    (TestRunAborted: an error, not a failure of the prompt)."""
    try:
        yield
    except GatewayError as exc:
        if as_json:
            emit({"error": {"message": exc.message, "code": exc.code}})
        else:
            err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(2 if isinstance(exc, TestRunAborted) else 1) from None
