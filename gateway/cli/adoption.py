"""`gateway adoption ...`: candidates, adopt (PRODUCT §14)."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli import render as draw
from gateway.cli.runtime import JsonFlag, emit, failures, out, runtime
from gateway.errors import InvalidRequest

adoption_app = typer.Typer(
    help="Adopt the system prompts apps hard-code as managed prompts, without touching the apps.",
    no_args_is_help=True,
)


@adoption_app.command("candidates")
def candidates(as_json: JsonFlag = False) -> None:
    """List the captured system prompts, grouped into templates, most called first."""
    with failures(as_json):
        found = runtime.call(lambda backend: backend.candidates())
    if as_json:
        emit(found)
        return
    if not found:
        out.print(
            "No candidates yet: turn capture on (adoption.capture: true, or "
            "GATEWAY_ADOPTION_CAPTURE=true) and let unmanaged calls through the gateway.",
            markup=False,
        )
        return
    out.print(draw.candidates_table(found))
    problems = [c for c in found if not c["adoptable"]]
    for c in problems:
        out.print(f"(!) {c['id']} cannot be adopted: {c['problem']}", markup=False)


@adoption_app.command("adopt")
def adopt(
    candidate: Annotated[
        str, typer.Argument(help="The candidate id (gateway adoption candidates).")
    ],
    name: Annotated[str, typer.Option("--name", help="The new prompt's name.")],
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="Rename a variable, var1=customer_name; repeat for more."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create version 1.0.0 of a new prompt from a candidate; matching calls are then served as
    that prompt (bodies unchanged while 1.0.0 serves)."""
    with failures(as_json):
        renames: dict[str, str] = {}
        for pair in var or []:
            key, sep, value = pair.partition("=")
            if not sep or not key or not value:
                raise InvalidRequest(
                    f"--var {pair!r} must look like var1=customer_name.", param="variables"
                )
            renames[key] = value
        result = runtime.call(lambda backend: backend.adopt(candidate, name, renames))
    if as_json:
        emit(result)
        return
    version = result["version"]
    out.print(
        f"Adopted {result['candidate']} as {result['name']}@{version['version']} (active); "
        f"variables: {', '.join(version['variables']) or 'none'}. Matching calls are served as "
        f"{result['name']} from now on, unchanged while {version['version']} serves.",
        markup=False,
    )
