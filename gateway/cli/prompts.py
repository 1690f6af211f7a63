"""`gateway prompts ...`: push, list, show, render, resolve, test, promote, rollback, diff."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from gateway.cli import render as draw
from gateway.cli.backend import Backend, Json
from gateway.cli.runtime import JsonFlag, emit, err, failures, out, runtime
from gateway.core.model import ENVIRONMENTS, Environment
from gateway.core.promptfile import PromptFile
from gateway.core.versions import parse_version
from gateway.errors import InvalidPromptVariables, InvalidRequest, PromptNotFound
from gateway.files import load_prompt_files
from gateway.prompts import unknown_prompt

prompts_app = typer.Typer(help="Manage prompt versions.", no_args_is_help=True)


@prompts_app.command("push")
def push(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Prompt files or folders (default: prompts_dir).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create the versions that the files describe; unchanged ones are left alone."""
    with failures(as_json):
        files = load_prompt_files(paths or [runtime.settings.prompts_dir])
        results = runtime.call(lambda backend: backend.push(files), creates_store=True)
    if as_json:
        emit(results)
        return
    out.print(draw.push_table(results))
    created = sum(r["status"] == "created" for r in results)
    out.print(f"{created} created, {len(results) - created} unchanged")


@prompts_app.command("list")
def list_prompts(as_json: JsonFlag = False) -> None:
    """List prompts with their newest and active versions."""
    with failures(as_json):
        rows = runtime.call(lambda backend: backend.prompts())
    if as_json:
        emit(rows)
        return
    out.print(draw.prompts_table(rows))


@prompts_app.command("show")
def show(
    name: str,
    version: Annotated[str | None, typer.Option("--version", "-v", help="One version.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a prompt's versions, or one version in full."""
    with failures(as_json):
        if version is not None:
            doc = runtime.call(lambda backend: backend.version(name, version))
        else:
            doc = runtime.call(lambda backend: backend.prompt(name))
    if as_json:
        emit(doc)
    elif version is not None:
        out.print(draw.version_text(doc))
    else:
        out.print(draw.versions_table(doc["versions"]))


@prompts_app.command("render")
def render_prompt(
    name: str,
    version: Annotated[str | None, typer.Option("--version", "-v", help="Pin a version.")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="A variable, KEY=VALUE; repeat for more.")
    ] = None,
    env: Annotated[str | None, typer.Option("--env", help="Environment to resolve in.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the messages a prompt renders to with the given variables."""
    with failures(as_json):
        values = _parse_vars(var or [])
        environment = _environment(env)

        async def work(backend: Backend) -> Json:
            chosen = version or (await backend.resolve(name, environment, None))["version"]
            return await backend.render(name, chosen, values)

        rendered = runtime.call(work)
    if as_json:
        emit(rendered)
        return
    out.print(draw.messages_text(rendered))


@prompts_app.command("resolve")
def resolve_prompt(
    name: str,
    env: Annotated[
        str | None, typer.Option("--env", help="Environment (default: GATEWAY_ENV).")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="The user key (X-User-Id).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Say which version and variant would serve this user in this environment."""
    with failures(as_json):
        environment = _environment(env)
        doc = runtime.call(lambda backend: backend.resolve(name, environment, user))
    if as_json:
        emit(doc)
        return
    out.print(" ".join(f"{k}={v if v is not None else '-'}" for k, v in doc.items()), markup=False)


@prompts_app.command("test")
def test_prompt(
    name: str,
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version (default: the newest).")
    ] = None,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="Prompt files or folders with the tests.")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Tests at once.")] = 8,
    as_json: JsonFlag = False,
) -> None:
    """Run a version's tests through the providers and store the pass rate (exit 1 under the
    promotion threshold; exit 2, storing nothing, when a provider cannot be reached). With a
    gateway URL, the gateway runs the tests of your local file."""
    with failures(as_json):
        where = path or [runtime.settings.prompts_dir]
        every = load_prompt_files(where)
        files = [f for f in every if f.name == name]

        async def work(backend: Backend) -> tuple[PromptFile, Json]:
            if not files:
                known = {p["name"] for p in await backend.prompts()}
                if name not in known:
                    raise unknown_prompt(name, known | {f.name for f in every})
            if not any(f.tests for f in files):
                raise PromptNotFound(
                    f"No tests for prompt {name!r} in {', '.join(where)}; "
                    "add a tests: list to its file."
                )
            chosen = version or _newest(await backend.prompt(name))
            file = _tests_file(name, chosen, files)
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                disable=as_json,
            ) as progress:
                run = await backend.test(
                    name,
                    chosen,
                    file,
                    concurrency=concurrency,
                    progress=_Reporter(progress),
                )
            return file, run

        file, run = runtime.call(work)
    if as_json:
        emit(run)
    else:
        out.print(draw.test_table([t.id for t in file.tests], run))
        out.print(
            f"{name}@{run['version']}: {run['passed']}/{run['total']} passed "
            f"({run['pass_rate']:.0%}; promotion needs {run['threshold']:.0%})",
            markup=False,
        )
    if run["pass_rate"] < run["threshold"]:
        err.print(
            f"error: {name}@{run['version']} passed {run['passed']} of {run['total']} tests "
            f"({run['pass_rate']:.0%}), under the promotion threshold of {run['threshold']:.0%}",
            markup=False,
        )
        raise typer.Exit(1)


class _Reporter:
    """A test run's progress as a rich progress bar (a pulsing one when the total is unknown)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, label: str, total: int | None) -> None:
        self._task = self._progress.add_task(f"testing {label}", total=total)

    def advance(self) -> None:
        if self._task is not None:
            self._progress.advance(self._task)


def _newest(detail: Json) -> str:
    """The newest version of a prompt (highest semantic version)."""
    return max((str(v["version"]) for v in detail["versions"]), key=parse_version)


def _tests_file(name: str, version: str, files: Sequence[PromptFile]) -> PromptFile:
    """The file whose tests to run: the only one of the prompt's files with tests, or the one
    describing `version` when several have tests."""
    with_tests = [f for f in files if f.tests]
    if len(with_tests) == 1:
        return with_tests[0]
    for file in with_tests:
        if any(d.version == version for d in file.drafts):
            return file
    raise InvalidRequest(
        f"Tests for prompt {name!r} are in several files ("
        f"{', '.join(f.source for f in with_tests)}) and none describes {version}; "
        "choose one with --path.",
        param="path",
    )


@prompts_app.command("promote")
def promote(
    name: str,
    version: str,
    force: Annotated[
        bool, typer.Option("--force", help="Skip the pass-rate gate (audited as forced).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Make a version the production version, if its last test run reached the threshold."""
    with failures(as_json):
        result = runtime.call(lambda backend: backend.promote(name, version, force=force))
    if as_json:
        emit(result)
    elif not result["changed"]:
        out.print(f"{name}@{version} is already active", markup=False)
    else:
        before = result["previous"] or "none"
        forced = " (forced)" if result["forced"] else ""
        out.print(f"{name}: active {before} -> {version}{forced}", markup=False)


@prompts_app.command("rollback")
def rollback(name: str, as_json: JsonFlag = False) -> None:
    """Re-activate the version that was active before the current one."""
    with failures(as_json):
        result = runtime.call(lambda backend: backend.rollback(name))
    if as_json:
        emit(result)
        return
    out.print(
        f"{name}: active {result['previous']} -> {result['active']} (rolled back)", markup=False
    )


@prompts_app.command("diff")
def diff(name: str, old: str, new: str, as_json: JsonFlag = False) -> None:
    """Show a unified diff of two versions' templates and parameters."""
    with failures(as_json):
        doc = runtime.call(lambda backend: backend.diff(name, old, new))
    if as_json:
        emit(doc)
        return
    out.print(doc["diff"] or f"{name}@{old} and {name}@{new} have the same content", markup=False)


def _parse_vars(pairs: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidPromptVariables(f"--var {pair!r} must look like KEY=VALUE.")
        values[key] = value
    return values


def _environment(env: str | None) -> Environment | None:
    """The --env given, checked; None leaves the choice to the backend (its GATEWAY_ENV)."""
    if env is not None and env not in ENVIRONMENTS:
        raise InvalidRequest(
            f"--env {env!r} is not an environment; use one of {', '.join(ENVIRONMENTS)}.",
            param="env",
        )
    return env
