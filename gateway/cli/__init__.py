"""The `gateway` command line: the composition root for commands.

Every command reads the same config and store as the server, prints tables for people and
`--json` for scripts, and exits 1 with a one-line reason on failure.
"""

from __future__ import annotations

import asyncio
import difflib
import getpass
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from gateway import __version__
from gateway import experiments as experiments_usecases
from gateway import settings as settings_module
from gateway.core.diffing import diff_versions
from gateway.core.model import ENVIRONMENTS, AuditEntry, Environment, PromptState
from gateway.core.registry import require_version
from gateway.core.rendering import coerce_variables, render
from gateway.core.resolution import resolve
from gateway.core.stats import ExperimentResults
from gateway.errors import GatewayError, InvalidPromptVariables, InvalidRequest, PromptNotFound
from gateway.files import ExperimentSpec, load_experiment_file, load_prompt_files, parse_time
from gateway.prompts import PromptRegistry, utc_now
from gateway.settings import Settings
from gateway.stores import codec
from gateway.stores.base import Store
from gateway.stores.factory import open_store
from gateway.stores.redis import redact

T = TypeVar("T")

app = typer.Typer(
    name="gateway",
    help="Prompt Gateway: an OpenAI-compatible proxy serving versioned, tested prompts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
prompts_app = typer.Typer(help="Manage prompt versions.", no_args_is_help=True)
experiments_app = typer.Typer(help="A/B experiments between prompt versions.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
app.add_typer(experiments_app, name="experiments")

# Piped output is not squeezed to 80 columns: scripts use --json, people reading logs want it all.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class Runtime:
    """What every command needs: settings, loaded once, and the actor to audit writes as."""

    config: str | None = None
    actor: str = ""
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_module.load(self.config, os.environ)
        return self._settings

    def run(self, work: Callable[[Store, PromptRegistry], Awaitable[T]]) -> T:
        """Open the store, run `work` with it and a registry, and close it."""

        async def main() -> T:
            store = open_store(self.settings.store_url)
            try:
                await store.ping()
                registry = PromptRegistry(store, threshold=self.settings.promotion.threshold)
                return await work(store, registry)
            finally:
                await store.close()

        return asyncio.run(main())


runtime = Runtime()


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
        str | None, typer.Option("--actor", help="Who to record in the audit log (default: you).")
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_version
        ),
    ] = False,
) -> None:
    runtime.config = config
    runtime.actor = actor or _whoami()
    runtime._settings = None


def _whoami() -> str:
    try:
        return getpass.getuser()
    except OSError:
        return "cli"


def emit(data: Any) -> None:
    """Print `data` as JSON on stdout."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextmanager
def _failures(as_json: bool = False) -> Iterator[None]:
    """Exit 1 with a one-line reason on stderr, or with `{"error": {"message", "code"}}` on
    stdout when the command was asked for JSON."""
    try:
        yield
    except GatewayError as exc:
        if as_json:
            emit({"error": {"message": exc.message, "code": exc.code}})
        else:
            err.print(f"error: {exc.message}", markup=False)
        raise typer.Exit(1) from None


# ---- serve -----------------------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Interface (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8080).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the gateway: the OpenAI-compatible proxy on /v1, plus /healthz and /readyz."""
    with _failures(as_json):
        settings = runtime.settings  # validate the config before any worker starts
    server = settings.server
    chosen_host, chosen_port = host or server.host, port or server.port
    err.print(
        f"Prompt Gateway on http://{chosen_host}:{chosen_port}/v1 "
        f"(environment {settings.env}, store {redact(settings.store_url)})",
        markup=False,
    )
    if runtime.config:
        os.environ["GATEWAY_CONFIG"] = runtime.config  # every worker loads the same file
    # Replace this process with uvicorn, so the server does not carry the CLI's libraries
    # (about 8 MiB of resident memory per worker).
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "gateway.api.app:app_from_environment",
        "--factory",
        "--host",
        chosen_host,
        "--port",
        str(chosen_port),
        "--workers",
        str(workers or server.workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "on",
        "--no-access-log",
        "--log-level",
        "info",
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, args)


# ---- prompts ---------------------------------------------------------------------------------


@prompts_app.command("push")
def push(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Prompt files or folders (default: prompts_dir).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create the versions that the files describe; unchanged ones are left alone."""
    with _failures(as_json):
        files = load_prompt_files(paths or [runtime.settings.prompts_dir])
        results = runtime.run(lambda _, registry: registry.push(files, actor=runtime.actor))
    if as_json:
        emit(
            [
                {"name": r.name, "version": r.version, "status": r.status, "file": r.source}
                for r in results
            ]
        )
        return
    table = Table("name", "version", "status", "file")
    for r in results:
        table.add_row(r.name, r.version, r.status, r.source)
    out.print(table)
    created = sum(r.status == "created" for r in results)
    out.print(f"{created} created, {len(results) - created} unchanged")


@prompts_app.command("list")
def list_prompts(as_json: JsonFlag = False) -> None:
    """List prompts with their newest and active versions."""
    with _failures(as_json):
        snap = runtime.run(lambda store, _: store.snapshot())
    rows = []
    for name in sorted(snap.prompts):
        state = snap.prompts[name]
        rows.append(
            {
                "name": name,
                "versions": len(state.versions),
                "newest": state.newest.version if state.newest else None,
                "newest_tested": state.newest_tested.version if state.newest_tested else None,
                "active": state.active,
                "experiment": next(
                    (e.id for e in state.experiments if e.status == "running"), None
                ),
            }
        )
    if as_json:
        emit(rows)
        return
    table = Table("name", "versions", "newest", "newest tested", "active", "experiment")
    for row in rows:
        table.add_row(*(str(v) if v is not None else "-" for v in row.values()))
    out.print(table)


@prompts_app.command("show")
def show(
    name: str,
    version: Annotated[str | None, typer.Option("--version", "-v", help="One version.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a prompt's versions, or one version in full."""
    with _failures(as_json):
        state = _existing(runtime.run(lambda store, _: store.prompt(name)), name)
        chosen = [require_version(state, version)] if version else list(state.versions)
    if as_json:
        docs = [codec.version_to_dict(v) for v in chosen]
        emit(docs[0] if version else {"name": name, "active": state.active, "versions": docs})
        return
    if version:
        v = chosen[0]
        out.print(
            f"[bold]{v.label}[/bold]  number {v.number}  "
            f"{'active' if v.is_active else 'inactive'}  "
            f"{'tested' if v.is_tested else 'untested'}"
        )
        out.print(
            f"model={v.model} temperature={v.temperature} max_tokens={v.max_tokens} "
            f"client_system={v.client_system} tags={','.join(v.tags) or '-'}",
            markup=False,
        )
        out.print(f"variables: {', '.join(v.variables) or '-'}", markup=False)
        out.print(f"created {v.created_at.isoformat()} by {v.created_by}", markup=False)
        if v.test_results:
            r = v.test_results
            out.print(f"last test run: {r.passed}/{r.total} passed ({r.pass_rate:.0%})")
        for message in v.messages:
            out.print(f"\n[bold]{message.role}[/bold]")
            out.print(message.content, markup=False)
        return
    table = Table("version", "number", "active", "tested", "pass rate", "model", "created", "by")
    for v in sorted(chosen, key=lambda v: v.semver):
        rate = f"{v.test_results.pass_rate:.0%}" if v.test_results else "-"
        table.add_row(
            v.version,
            str(v.number),
            "yes" if v.is_active else "",
            "yes" if v.is_tested else "",
            rate,
            v.model or "-",
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            v.created_by,
        )
    out.print(table)


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
    with _failures(as_json):
        values = coerce_variables(_parse_vars(var or []))
        snap = runtime.run(lambda store, _: store.snapshot())
        chosen = resolve(
            snap,
            name,
            environment=_environment(env),
            pinned=version,
            overrides=runtime.settings.overrides,
            now=utc_now(),
            request_id=uuid.uuid4().hex,
        ).version
        messages = render(chosen.template, values, chosen.label)
    if as_json:
        emit(
            {
                "name": chosen.name,
                "version": chosen.version,
                "messages": [{"role": m.role, "content": m.content} for m in messages],
            }
        )
        return
    out.print(f"[dim]{chosen.label}[/dim]")
    for message in messages:
        out.print(f"[bold]{message.role}[/bold]")
        out.print(message.content, markup=False)


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
    with _failures(as_json):
        snap = runtime.run(lambda store, _: store.snapshot())
        got = resolve(
            snap,
            name,
            environment=_environment(env),
            overrides=runtime.settings.overrides,
            user_key=user,
            request_id=uuid.uuid4().hex,
            now=utc_now(),
        )
    doc = {
        "name": name,
        "version": got.version.version,
        "number": got.version.number,
        "variant": got.variant,
        "resolution": got.resolution,
        "experiment": got.experiment.id if got.experiment else None,
    }
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
    """Run a version's tests through the configured providers and store the pass rate."""
    from rich.progress import Progress

    from gateway.testing import TestOutcome, TestRunner
    from gateway.upstream.client import HttpUpstream

    settings = runtime.settings
    with _failures(as_json):
        every = load_prompt_files(path or [settings.prompts_dir])
        files = [f for f in every if f.name == name]
        tests = [t for f in files for t in f.tests]
        if not files and not runtime.run(lambda store, _: store.prompt(name)).versions:
            raise _unknown_prompt(name, also=(f.name for f in every))
        if not tests:
            raise PromptNotFound(
                f"No tests for prompt {name!r} in {', '.join(path or [settings.prompts_dir])}; "
                "add a tests: list to its file."
            )

        async def work(
            store: Store, registry: PromptRegistry
        ) -> tuple[Any, list[TestOutcome], str]:
            snapshot = await store.snapshot()
            state = _existing(snapshot.prompts.get(name) or PromptState(name), name)
            chosen = require_version(state, version) if version else state.newest
            assert chosen is not None
            upstream = HttpUpstream(settings.upstream)
            runner = TestRunner(
                settings, upstream, snapshot, api_key=settings.test_api_key, concurrency=concurrency
            )
            try:
                with Progress(console=err, transient=True, disable=as_json) as progress:
                    task = progress.add_task(f"testing {chosen.label}", total=len(tests))
                    results, outcomes = await runner.run(
                        chosen,
                        tests,
                        now=utc_now(),
                        on_done=lambda _: progress.advance(task),
                    )
            finally:
                await upstream.close()
            await registry.record_test_run(name, chosen.version, results, actor=runtime.actor)
            return results, outcomes, chosen.version

        results, outcomes, tested = runtime.run(work)
    threshold = settings.promotion.threshold
    if as_json:
        emit(
            {
                "name": name,
                "version": tested,
                "threshold": threshold,
                "is_tested": results.pass_rate >= threshold,
            }
            | codec.results_to_dict(results)
        )
    else:
        table = Table("test", "result", "failed expectations")
        for o in outcomes:
            table.add_row(
                o.test_id,
                "pass" if o.passed else "FAIL",
                "; ".join(f"{m.expectation}: {m.detail}" for m in o.misses) or "-",
            )
        out.print(table)
        out.print(
            f"{name}@{tested}: {results.passed}/{results.total} passed "
            f"({results.pass_rate:.0%}; promotion needs {threshold:.0%})",
            markup=False,
        )
    if results.pass_rate < threshold:
        err.print(
            f"error: {name}@{tested} passed {results.passed} of {results.total} tests "
            f"({results.pass_rate:.0%}), under the promotion threshold of {threshold:.0%}",
            markup=False,
        )
        raise typer.Exit(1)


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
    with _failures(as_json):
        entry = runtime.run(
            lambda _, registry: registry.promote(name, version, actor=runtime.actor, force=force)
        )
    if as_json:
        emit(_activation(name, version, entry))
        return
    if entry is None:
        out.print(f"{name}@{version} is already active", markup=False)
        return
    before = (entry.before or {}).get("active") or "none"
    out.print(f"{name}: active {before} -> {version}{' (forced)' if force else ''}", markup=False)


@prompts_app.command("rollback")
def rollback(name: str, as_json: JsonFlag = False) -> None:
    """Re-activate the version that was active before the current one."""
    with _failures(as_json):
        entry = runtime.run(lambda _, registry: registry.rollback(name, actor=runtime.actor))
    if as_json:
        emit(_activation(name, entry.version, entry))
        return
    before = (entry.before or {}).get("active")
    out.print(f"{name}: active {before} -> {entry.version} (rolled back)", markup=False)


def _activation(name: str, active: str | None, entry: AuditEntry | None) -> dict[str, Any]:
    """The --json result of promote and rollback: one shape for both."""
    return {
        "name": name,
        "active": active,
        "previous": (entry.before or {}).get("active") if entry else active,
        "changed": entry is not None,
        "forced": bool(entry and entry.forced),
        "audit": codec.audit_to_dict(entry) if entry else None,
    }


@prompts_app.command("diff")
def diff(name: str, old: str, new: str, as_json: JsonFlag = False) -> None:
    """Show a unified diff of two versions' templates and parameters."""
    with _failures(as_json):
        state = _existing(runtime.run(lambda store, _: store.prompt(name)), name)
        text = diff_versions(require_version(state, old), require_version(state, new))
    if as_json:
        emit({"name": name, "from": old, "to": new, "changed": bool(text), "diff": text})
        return
    out.print(text or f"{name}@{old} and {name}@{new} have the same content", markup=False)


# ---- experiments -----------------------------------------------------------------------------


@experiments_app.command("create")
def create_experiment(
    id: Annotated[str | None, typer.Option("--id", help="Experiment id.")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Prompt name.")] = None,
    control: Annotated[str | None, typer.Option("--control", help="Control version.")] = None,
    treatment: Annotated[str | None, typer.Option("--treatment", help="Treatment version.")] = None,
    split: Annotated[
        float | None, typer.Option("--split", help="Share to treatment, 0..1.")
    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="ISO 8601 (default: now).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="ISO 8601 (default: open).")] = None,
    metric: Annotated[
        str, typer.Option("--metric", help="Metric to judge by.")
    ] = "user_satisfaction",
    file: Annotated[
        str | None, typer.Option("--file", help="Create the experiments a YAML file lists.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Start an A/B experiment between two versions of a prompt (or every one in --file)."""
    with _failures(as_json):
        if file is not None:
            specs = load_experiment_file(file)
        else:
            missing = [
                f"--{k}"
                for k, v in {
                    "id": id,
                    "prompt": prompt,
                    "control": control,
                    "treatment": treatment,
                    "split": split,
                }.items()
                if v is None
            ]
            if missing:
                err.print(f"error: missing {', '.join(missing)} (or give --file)")
                raise typer.Exit(1)
            assert id and prompt and control and treatment and split is not None
            if not 0 <= split <= 1:
                raise InvalidRequest(
                    f"--split {split:g} is out of range: give the share of users sent to the "
                    "treatment, between 0 and 1 (0.3 sends 30%).",
                    param="split",
                )
            specs = [
                ExperimentSpec(
                    id,
                    prompt,
                    control,
                    treatment,
                    split,
                    parse_time(start, "--start"),
                    parse_time(end, "--end"),
                    metric,
                )
            ]

        async def work(_: Store, registry: PromptRegistry) -> list[tuple[Any, str]]:
            return [await registry.ensure_experiment(s, actor=runtime.actor) for s in specs]

        results = runtime.run(work)
    if as_json:
        docs = [codec.experiment_to_dict(e) | {"result": status} for e, status in results]
        emit(docs[0] if file is None else docs)
        return
    for experiment, status in results:
        out.print(
            f"{experiment.id}: {status} ({experiment.prompt_name} "
            f"{experiment.control_version} vs {experiment.treatment_version}, "
            f"{experiment.traffic_split:.0%} to treatment)",
            markup=False,
        )


@experiments_app.command("list")
def list_experiments(as_json: JsonFlag = False) -> None:
    """List experiments, running ones first."""
    with _failures(as_json):
        snap = runtime.run(lambda store, _: store.snapshot())
    now = utc_now()
    experiments = [e for s in snap.prompts.values() for e in s.experiments]
    experiments.sort(key=lambda e: (not e.is_running(now), e.start), reverse=False)
    if as_json:
        emit(
            [codec.experiment_to_dict(e) | {"running_now": e.is_running(now)} for e in experiments]
        )
        return
    table = Table(
        "id", "prompt", "control", "treatment", "split", "status", "start", "end", "metric"
    )
    for e in experiments:
        status = (
            "running"
            if e.is_running(now)
            else (
                "scheduled"
                if e.status == "running" and e.start > now
                else "ended"
                if e.status == "running"
                else e.status
            )
        )
        table.add_row(
            e.id,
            e.prompt_name,
            e.control_version,
            e.treatment_version,
            f"{e.traffic_split:g}",
            status,
            e.start.strftime("%Y-%m-%d %H:%M"),
            e.end.strftime("%Y-%m-%d %H:%M") if e.end else "-",
            e.metric,
        )
    out.print(table)


@experiments_app.command("stop")
def stop_experiment(id: str, as_json: JsonFlag = False) -> None:
    """Stop an experiment; its prompt goes back to environment resolution."""
    with _failures(as_json):
        stopped = runtime.run(lambda _, registry: registry.stop_experiment(id, actor=runtime.actor))
    if as_json:
        emit(codec.experiment_to_dict(stopped))
        return
    out.print(f"{id}: stopped", markup=False)


@experiments_app.command("results")
def experiment_results(id: str, as_json: JsonFlag = False) -> None:
    """Compare the arms of an experiment: means, intervals, p-value, and what to do."""
    with _failures(as_json):
        results = runtime.run(
            lambda store, _: experiments_usecases.experiment_results(
                store, id, runtime.settings.experiments
            )
        )
    if as_json:
        emit(results.to_json())
        return
    out.print(results_table(results))
    out.print(results_chart(results), markup=False)
    out.print(f"{results.recommendation}: {results.reason}", markup=False)


@experiments_app.command("conclude")
def conclude_experiment(
    id: str,
    force: Annotated[
        bool, typer.Option("--force", help="Promote the treatment even under the test gate.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Stop an experiment; promote its treatment when the results recommend it."""
    settings = runtime.settings
    with _failures(as_json):
        conclusion = runtime.run(
            lambda store, _: experiments_usecases.conclude_experiment(
                store,
                id,
                settings=settings.experiments,
                threshold=settings.promotion.threshold,
                force=force,
                actor=runtime.actor,
                clock=utc_now,
            )
        )
    results = conclusion.results
    if as_json:
        emit(
            {
                "experiment": codec.experiment_to_dict(conclusion.experiment),
                "promoted": conclusion.promoted,
                "results": results.to_json(),
            }
        )
        return
    promoted = (
        f"; {conclusion.experiment.prompt_name} {conclusion.experiment.treatment_version} "
        "is now active"
        if conclusion.promoted
        else "; nothing promoted"
    )
    out.print(f"{id}: stopped{promoted}", markup=False)
    out.print(f"{results.recommendation}: {results.reason}", markup=False)


def results_table(results: ExperimentResults) -> Table:
    """Both arms side by side, and the difference."""
    table = Table("", "version", "users", "requests", "with value", "mean", "95% interval")
    for name, arm in (("control", results.control), ("treatment", results.treatment)):
        table.add_row(
            name,
            arm.version,
            str(arm.users),
            str(arm.requests),
            str(arm.with_value),
            _figure(arm.mean, results.metric),
            _interval(arm.ci95, results.metric),
        )
    diff = results.difference
    relative = f" ({diff.relative:+.1%})" if diff.relative is not None else ""
    table.add_row(
        "difference",
        "",
        "",
        "",
        "",
        _figure(diff.absolute, results.metric) + relative,
        _interval(diff.ci95, results.metric),
    )
    table.caption = (
        f"{results.metric} ({results.direction.replace('_', ' ')}), {results.test}, "
        f"p = {_figure(results.p_value)}, alpha {results.alpha:g}; sample ratio p = "
        f"{_figure(results.srm.p_value)}{' MISMATCH' if results.srm.mismatch else ''}"
    )
    return table


def results_chart(results: ExperimentResults, width: int = 48) -> str:
    """Each arm's mean (●) and 95% interval (├─┤) on one shared scale, as text."""
    arms = [("control", results.control), ("treatment", results.treatment)]
    bounds = [b for _, arm in arms if arm.ci95 is not None for b in arm.ci95]
    bounds += [arm.mean for _, arm in arms if arm.mean is not None]
    if not bounds:
        return "(no values yet)"
    low, high = min(bounds), max(bounds)
    span = (high - low) or 1.0

    def col(value: float) -> int:
        return round((value - low) / span * (width - 1))

    lines = []
    for name, arm in arms:
        row = [" "] * width
        if arm.ci95 is not None:
            a, b = col(arm.ci95[0]), col(arm.ci95[1])
            for i in range(a, b + 1):
                row[i] = "─"
            row[a], row[b] = "├", "┤"
        if arm.mean is not None:
            row[col(arm.mean)] = "●"
        lines.append(f"{name:>9} {''.join(row)}")
    left, right = _figure(low, results.metric), _figure(high, results.metric)
    lines.append(f"{'':>9} {left:<{width // 2}}{right:>{width - width // 2}}")
    return "\n".join(lines)


def _figure(value: float | None, metric: str = "") -> str:
    if value is None:
        return "-"
    if metric == "cost_per_task":  # USD: fixed decimals, never 1.2e-05
        return f"${value:,.6f}" if abs(value) < 1 else f"${value:,.2f}"
    return f"{value:.4g}"


def _interval(interval: tuple[float, float] | None, metric: str = "") -> str:
    if interval is None:
        return "-"
    return f"[{_figure(interval[0], metric)}, {_figure(interval[1], metric)}]"


# ---- audit -----------------------------------------------------------------------------------


@app.command("audit")
def audit(
    prompt: Annotated[str | None, typer.Option("--prompt", help="Only this prompt.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many entries, newest.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Show who changed what: creates, test runs, promotions, rollbacks, experiments."""
    with _failures(as_json):
        entries = runtime.run(lambda store, _: store.audit(prompt_name=prompt, limit=limit))
    if as_json:
        emit([codec.audit_to_dict(e) for e in entries])
        return
    # Fits 100 columns: the full before/after documents are in --json.
    table = Table("at (UTC)", "actor", "action", "prompt", "target", "change", box=box.SIMPLE)
    for e in entries:
        table.add_row(
            e.at.strftime("%m-%d %H:%M:%S"),
            _clip(e.actor, 12),
            e.action.replace("version.", "").replace("experiment.", "exp."),
            _clip(e.prompt_name, 18),
            _clip(e.version or e.experiment_id or "-", 14),
            _change(e) + (" (forced)" if e.forced else ""),
        )
    out.print(table, width=min(out.width, 100))


# ---- helpers ---------------------------------------------------------------------------------


def _change(entry: AuditEntry) -> str:
    """What an audit entry changed, in a few words: `active 1.0.0 -> 1.1.0`."""
    before, after = dict(entry.before or {}), dict(entry.after or {})
    changed = [
        f"{key} {before.get(key, '-')} -> {after[key]}"
        for key in after
        if key in before and before[key] != after[key]
    ]
    if not changed and after:
        changed = [f"{key}={value}" for key, value in after.items() if key != "id"]
    return _clip("; ".join(changed) or "-", 28)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _parse_vars(pairs: list[str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidPromptVariables(f"--var {pair!r} must look like KEY=VALUE.")
        values[key] = value
    return values


def _environment(env: str | None) -> Environment:
    chosen = env or runtime.settings.env
    if chosen not in ENVIRONMENTS:
        raise InvalidRequest(
            f"--env {chosen!r} is not an environment; use one of {', '.join(ENVIRONMENTS)}."
        )
    return chosen


def _existing(state: PromptState, name: str) -> PromptState:
    if not state.versions:
        raise _unknown_prompt(name)
    return state


def _unknown_prompt(name: str, also: Iterable[str] = ()) -> PromptNotFound:
    """`Prompt 'x' does not exist`, with the closest known names (the store's, and `also`)."""
    try:
        known = set(runtime.run(lambda store, _: store.snapshot()).prompts) | set(also)
    except GatewayError:
        known = set(also)
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    hint = (
        f" Did you mean: {', '.join(close)}?"
        if close
        else (f" Known prompts: {', '.join(sorted(known)[:10])}." if known else "")
    )
    return PromptNotFound(f"Prompt {name!r} does not exist.{hint}")


def main() -> None:
    """Console entry point."""
    app()
