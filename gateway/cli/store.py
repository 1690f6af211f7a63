"""`gateway store export FILE` / `gateway store restore FILE` (PRODUCT §12, §15).

Both work on the store the config names (GATEWAY_STORE_URL), never through a gateway's admin API:
they move the whole registry, audit included, which no admin route does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.runtime import JsonFlag, emit, failures, out, runtime
from gateway.errors import InvalidRequest
from gateway.prompts import utc_now
from gateway.stores.backup import dump_export, load_export, write_atomically
from gateway.stores.base import Store
from gateway.stores.factory import open_store

store_app = typer.Typer(
    help="The whole registry out to a JSON file and back into an empty store.",
    no_args_is_help=True,
)

FileArgument = Annotated[Path, typer.Argument(help="The JSON file.", dir_okay=False)]


@store_app.command("export")
def export(file: FileArgument, as_json: JsonFlag = False) -> None:
    """Write every prompt version, experiment, activation and audit entry to FILE (JSON)."""
    with failures(as_json):

        async def work(store: Store) -> dict[str, Any]:
            backup = await store.export()
            data = dump_export(backup, exported_at=utc_now())
            try:
                await asyncio.to_thread(write_atomically, file, data)
            except OSError as exc:
                raise InvalidRequest(
                    f"Cannot write {file}: {exc.strerror or exc}.", param="file"
                ) from exc
            return _summary("exported", file, store, backup.snapshot.revision, backup.counts())

        summary = _run(work, creates_store=False)
    _print(summary, as_json)


@store_app.command("restore")
def restore(file: FileArgument, as_json: JsonFlag = False) -> None:
    """Write the registry exported in FILE into the store, which must hold no registry yet."""
    with failures(as_json):
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise InvalidRequest(
                f"Cannot read {file}: {exc.strerror or exc}.", param="file"
            ) from exc
        backup = load_export(raw, where=str(file))

        async def work(store: Store) -> dict[str, Any]:
            await store.restore(backup)
            revision = str(int(backup.snapshot.revision or 0) + 1)
            return _summary("restored", file, store, revision, backup.counts())

        summary = _run(work, creates_store=True)
    _print(summary, as_json)


def _run(work: Any, *, creates_store: bool) -> dict[str, Any]:
    runtime.check_store(creates_store)

    async def main() -> dict[str, Any]:
        store = open_store(runtime.settings.store_url)
        try:
            await store.ping()
            result: dict[str, Any] = await work(store)
            return result
        finally:
            await store.close()

    return asyncio.run(main())


def _summary(
    done: str, file: Path, store: Store, revision: str, counts: dict[str, int]
) -> dict[str, Any]:
    """`{result, file, store, revision, prompts, versions, experiments, audit}`."""
    return {
        "result": done,
        "file": str(file),
        "store": store.location,
        "revision": int(revision or 0),
        **counts,
    }


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(summary)
        return
    preposition = "to" if summary["result"] == "exported" else "from"
    out.print(
        f"{summary['result']} revision {summary['revision']} of {summary['store']} "
        f"{preposition} {summary['file']}: {summary['prompts']} prompts, {summary['versions']} "
        f"versions, {summary['experiments']} experiments, {summary['audit']} audit entries",
        markup=False,
    )
