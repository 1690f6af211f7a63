"""`gateway audit`: who changed what, with the state before and after."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli import render as draw
from gateway.cli.runtime import JsonFlag, emit, failures, out, runtime
from gateway.errors import InvalidRequest


def audit(
    prompt: Annotated[str | None, typer.Option("--prompt", help="Only this prompt.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many entries, newest.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Show who changed what: creates, test runs, promotions, rollbacks, experiments."""
    with failures(as_json):
        if not 1 <= limit <= 1000:
            raise InvalidRequest(
                f"--limit {limit} is out of range: give 1 to 1000 entries.", param="limit"
            )
        entries = runtime.call(lambda backend: backend.audit(prompt, limit))
    if as_json:
        emit(entries)
        return
    out.print(draw.audit_table(entries), width=min(out.width, 100))
