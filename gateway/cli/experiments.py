"""`gateway experiments ...`: create, list, stop, results, conclude."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli import render as draw
from gateway.cli.backend import Backend, Json
from gateway.cli.runtime import JsonFlag, emit, failures, out, runtime
from gateway.errors import InvalidRequest
from gateway.files import ExperimentSpec, load_experiment_file, parse_time
from gateway.prompts import utc_now

experiments_app = typer.Typer(help="A/B experiments between prompt versions.", no_args_is_help=True)


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
    with failures(as_json):
        if file is not None:
            specs = load_experiment_file(file)
        else:
            given = {
                "id": id,
                "prompt": prompt,
                "control": control,
                "treatment": treatment,
                "split": split,
            }
            missing = [f"--{k}" for k, v in given.items() if v is None]
            if missing:
                raise InvalidRequest(f"missing {', '.join(missing)} (or give --file)")
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

        async def work(backend: Backend) -> list[Json]:
            return [await backend.create_experiment(s) for s in specs]

        results = runtime.call(work)
    if as_json:
        emit(results[0] if file is None else results)
        return
    for e in results:
        out.print(
            f"{e['id']}: {e['result']} ({e['prompt_name']} "
            f"{e['control_version']} vs {e['treatment_version']}, "
            f"{e['traffic_split']:.0%} to treatment)",
            markup=False,
        )


@experiments_app.command("list")
def list_experiments(as_json: JsonFlag = False) -> None:
    """List experiments, running ones first."""
    with failures(as_json):
        experiments = runtime.call(lambda backend: backend.experiments())
    if as_json:
        emit(experiments)
        return
    out.print(draw.experiments_table(experiments, utc_now()))


@experiments_app.command("stop")
def stop_experiment(id: str, as_json: JsonFlag = False) -> None:
    """Stop an experiment; its prompt goes back to environment resolution."""
    with failures(as_json):
        stopped = runtime.call(lambda backend: backend.stop_experiment(id))
    if as_json:
        emit(stopped)
        return
    out.print(f"{id}: stopped", markup=False)


@experiments_app.command("results")
def experiment_results(id: str, as_json: JsonFlag = False) -> None:
    """Compare the arms of an experiment: means, intervals, p-value, and what to do."""
    with failures(as_json):
        results = runtime.call(lambda backend: backend.experiment_results(id))
    if as_json:
        emit(results)
        return
    out.print(draw.results_table(results))
    out.print(draw.results_chart(results), markup=False)
    out.print(f"{results['recommendation']}: {results['reason']}", markup=False)


@experiments_app.command("conclude")
def conclude_experiment(
    id: str,
    force: Annotated[
        bool, typer.Option("--force", help="Promote the treatment even under the test gate.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Stop an experiment; promote its treatment when the results recommend it."""
    with failures(as_json):
        conclusion = runtime.call(lambda backend: backend.conclude_experiment(id, force=force))
    if as_json:
        emit(conclusion)
        return
    experiment, results = conclusion["experiment"], conclusion["results"]
    promoted = (
        f"; {experiment['prompt_name']} {experiment['treatment_version']} is now active"
        if conclusion["promoted"]
        else "; nothing promoted"
    )
    out.print(f"{id}: stopped{promoted}", markup=False)
    out.print(f"{results['recommendation']}: {results['reason']}", markup=False)
