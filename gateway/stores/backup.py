"""The registry as one JSON document: `gateway store export` / `restore`, and the on-disk snapshot.

An export (`REGISTRY_FORMAT`) holds every prompt with its versions (test results and tested marks
included), its activation (what production serves, and the versions active before it) and its
experiments (with their state), plus every audit entry, oldest first, and the store revision it
was read at:

    {"format": "prompt-gateway-registry", "format_version": 1, "revision": "12",
     "exported_at": "2025-01-01T00:00:00+00:00",
     "prompts": [{"name", "active", "history": [...], "versions": [...], "experiments": [...],
                  "adoption": {"version", "candidate", "at", "by"} or null}],
     "audit": [{"at", "actor", "action", "prompt_name", ...}, ...]}

Versions, experiments and audit entries have the admin API's shapes (`stores.codec`). Experiment
outcomes (exposures, feedback) are not part of it: they are measurements, not the registry.

A snapshot file (`SNAPSHOT_FORMAT`) is the same document without audit, with the store it was
read from in `source`, so a gateway never serves another store's registry from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.core.model import AuditEntry, PromptState, RegistrySnapshot
from gateway.core.registry import check_restored
from gateway.errors import GatewayError, InvalidRequest
from gateway.stores import codec

REGISTRY_FORMAT = "prompt-gateway-registry"
SNAPSHOT_FORMAT = "prompt-gateway-snapshot"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RegistryExport:
    """Everything a registry holds but experiment outcomes, read at one revision."""

    snapshot: RegistrySnapshot
    """Every prompt: versions, activation, experiments; and the store revision."""
    audit: tuple[AuditEntry, ...] = ()
    """Every audit entry, oldest first."""

    @property
    def is_empty(self) -> bool:
        """No prompt and no audit entry: what an empty store exports."""
        return not self.snapshot.prompts and not self.audit

    def counts(self) -> dict[str, int]:
        """`{prompts, versions, experiments, audit}`: how many of each it holds."""
        prompts = self.snapshot.prompts.values()
        return {
            "prompts": len(prompts),
            "versions": sum(len(p.versions) for p in prompts),
            "experiments": sum(len(p.experiments) for p in prompts),
            "audit": len(self.audit),
        }


def dump_export(backup: RegistryExport, *, exported_at: datetime) -> bytes:
    """The export document as indented JSON (UTF-8)."""
    doc = {
        "format": REGISTRY_FORMAT,
        "format_version": FORMAT_VERSION,
        "revision": backup.snapshot.revision or "0",
        "exported_at": exported_at.isoformat(),
        "prompts": _prompts(backup.snapshot),
        "audit": [codec.audit_to_dict(e) for e in backup.audit],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def load_export(raw: bytes, *, where: str, now: datetime | None = None) -> RegistryExport:
    """Parse an export document and check it as the commands that wrote it would have
    (`check_restored`: versions as drafts, activations, experiments, adoptions; each prompt and
    each version once), at `now` (default: the clock). InvalidRequest naming `where` (the file)
    and the entry when it is not a registry export or is not one the gateway could have written.
    """
    doc = _document(raw, REGISTRY_FORMAT, where)
    try:
        audit = tuple(codec.audit_from_dict(e) for e in doc.get("audit", []))
        snapshot = _snapshot(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequest(f"{where} is not a complete registry export: {_reason(exc)}.") from exc
    except GatewayError as exc:  # a version whose semver is bad, from PromptVersion itself
        raise _refused(where, exc) from exc
    now = now or datetime.now(UTC)
    taken: set[str] = set()
    for name, state in snapshot.prompts.items():
        try:
            check_restored(state, taken_ids=taken, now=now)
        except GatewayError as exc:
            raise _refused(where, exc, name) from exc
        taken.update(e.id for e in state.experiments)
    return RegistryExport(snapshot, audit)


def _refused(where: str, exc: GatewayError, name: str | None = None) -> InvalidRequest:
    prompt = f"prompt {name!r}: " if name else ""
    return InvalidRequest(
        f"{where} cannot be restored: {prompt}{str(exc).rstrip('.')}. Nothing was written; "
        "fix the file or export it again.",
        param="file",
    )


def dump_snapshot(snapshot: RegistrySnapshot, *, source: str) -> bytes:
    """A snapshot file's content: the prompts, the revision and the store they came from."""
    doc = {
        "format": SNAPSHOT_FORMAT,
        "format_version": FORMAT_VERSION,
        "source": source,
        "revision": snapshot.revision or "0",
        "lineage": snapshot.lineage,
        "prompts": _prompts(snapshot),
    }
    return orjson.dumps(doc)


def load_snapshot(raw: bytes, *, where: str) -> tuple[RegistrySnapshot, str]:
    """Parse a snapshot file: (the snapshot, the store it came from). InvalidRequest when the
    content is not a snapshot file."""
    doc = _document(raw, SNAPSHOT_FORMAT, where)
    try:
        snapshot = _snapshot(doc)
        return replace(snapshot, lineage=str(doc.get("lineage") or "")), str(doc["source"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequest(f"{where} is not a complete snapshot: {_reason(exc)}.") from exc


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part:
    a temporary file beside it (this process's own), flushed to disk, then renamed over it.
    Raises OSError; the temporary file is removed then."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _prompts(snapshot: RegistrySnapshot) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "active": state.active,
            "history": list(state.history),
            "versions": [codec.version_to_dict(v) for v in state.versions],
            "experiments": [codec.experiment_to_dict(e) for e in state.experiments],
            "adoption": codec.adoption_to_dict(state.adoption) if state.adoption else None,
        }
        for name, state in sorted(snapshot.prompts.items())
    ]


def _snapshot(doc: dict[str, Any]) -> RegistrySnapshot:
    prompts: dict[str, PromptState] = {}
    for item in doc["prompts"]:
        name, active = str(item["name"]), item["active"]
        if name in prompts:
            raise ValueError(f"prompt {name!r} is listed twice")
        versions = sorted(
            (codec.version_from_dict(v, active=active) for v in item["versions"]),
            key=lambda v: v.number,
        )
        prompts[name] = PromptState(
            name=name,
            versions=tuple(versions),
            active=active,
            history=tuple(item["history"]),
            experiments=tuple(codec.experiment_from_dict(e) for e in item["experiments"]),
            # Files written before adoption existed have no key.
            adoption=codec.adoption_from_dict(item["adoption"]) if item.get("adoption") else None,
        )
    revision = str(doc["revision"])
    if not revision.isdigit():
        raise ValueError(f"revision {revision!r} is not a number")
    return RegistrySnapshot(prompts, revision)


def _document(raw: bytes, kind: str, where: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{where} is not JSON: {exc}.") from exc
    if not isinstance(doc, dict) or doc.get("format") != kind:
        raise InvalidRequest(f"{where} is not a {kind} file (its 'format' is not {kind!r}).")
    if doc.get("format_version") != FORMAT_VERSION:
        raise InvalidRequest(
            f"{where} has format_version {doc.get('format_version')!r}; this gateway reads "
            f"version {FORMAT_VERSION}."
        )
    return doc


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc.args[0]!r}"
    return str(exc).rstrip(".") or type(exc).__name__
