"""The `gateway` command line: the composition root for commands.

Every command reads the same config as the server, prints tables for people and `--json` for
scripts, and exits 1 with a one-line reason on failure. The registry commands (`prompts`,
`experiments`, `adoption`, `audit`) work on a `Backend` (`backend.py`): the store itself
(`local.py`), or, given a gateway URL and an admin token (`--url`/`--token` or
GATEWAY_URL/GATEWAY_ADMIN_TOKEN), that gateway's admin API (`remote.py`); they print the same
either way.

    __init__.py     the app, its root options, main()
    runtime.py      settings, the backend to use, output, failures
    backend.py      the Backend Protocol;  local.py, remote.py  its two implementations
    prompts.py      gateway prompts ...    experiments.py  gateway experiments ...
    adoption.py     gateway adoption candidates / adopt
    audit.py        gateway audit          serve.py        gateway serve (always local)
    store.py        gateway store export / restore (always local: the whole registry)
    render.py       tables and text drawn from the backends' JSON values
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gateway import __version__
from gateway.cli.adoption import adoption_app
from gateway.cli.audit import audit
from gateway.cli.demo import demo
from gateway.cli.experiments import experiments_app
from gateway.cli.prompts import prompts_app
from gateway.cli.runtime import emit, out, runtime
from gateway.cli.serve import serve
from gateway.cli.store import store_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="gateway",
    help="Prompt Gateway: an OpenAI-compatible proxy serving versioned, tested prompts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve)
app.command("demo")(demo)
app.add_typer(prompts_app, name="prompts")
app.add_typer(experiments_app, name="experiments")
app.add_typer(adoption_app, name="adoption")
app.command("audit")(audit)
app.add_typer(store_app, name="store")


def _version(value: bool) -> None:
    if value:
        out.print(f"gateway {__version__}", markup=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    config: Annotated[
        str | None,
        typer.Option(
            "--config", help="Config file (default: $GATEWAY_CONFIG, config/gateway.yaml)."
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor",
            help="Who to record in the audit log (default: you). Local store only: through a "
            "gateway URL, writes are audited under the admin token's name.",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="GATEWAY_URL",
            show_envvar=True,
            help="A gateway's base URL (http://host:8080): prompts, experiments and audit then "
            "go through its admin API instead of opening the store.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="GATEWAY_ADMIN_TOKEN",
            show_envvar=False,  # never echo a secret in --help
            help="The admin token for --url ($GATEWAY_ADMIN_TOKEN); its role decides what you "
            "may do.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_version
        ),
    ] = False,
) -> None:
    runtime.reset(config=config, actor=actor, url=url, token=token)


def main() -> None:
    """Console entry point. With --json, a usage error (a missing argument, a bad option value)
    is `{"error": {"message", "code": "usage_error"}}` on stdout with exit 1, like any failure."""
    if "--json" not in sys.argv[1:]:
        app()
        return
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        code = 1
    except Exception as exc:
        # Typer's usage errors (bad values, missing arguments, unknown options) carry exit code
        # 2 and a formatted message; it vendors click, so there is no public base class to name.
        if getattr(exc, "exit_code", None) != 2 or not hasattr(exc, "format_message"):
            raise
        emit({"error": {"message": exc.format_message(), "code": "usage_error"}})
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
