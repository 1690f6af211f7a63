"""Adoption's use cases, shared by the command line and the admin API (PRODUCT §14).

`list_candidates` groups what capture stored into candidates (`core.candidates`);
`adopt_candidate` turns one into version 1.0.0 of a new prompt through the store's atomic
`apply` (`core.adoption.plan_adopt`), so an unknown candidate, an existing name or a bad `--var`
is refused with nothing written. Both answer the JSON shapes that `--json` prints and the
admin API answers (`candidate_to_dict`, `adoption_result`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from gateway.core.adoption import AdoptionIndex, adopted_variables, build_index, plan_adopt
from gateway.core.candidates import Candidate, find_candidates
from gateway.core.capture import most_common_shape
from gateway.core.model import PromptVersion, RegistrySnapshot
from gateway.core.registry import validate_name
from gateway.errors import CandidateNotFound, VersionConflict
from gateway.stores import codec
from gateway.stores.base import Store


def candidate_to_dict(candidate: Candidate, adopted_as: str | None = None) -> dict[str, Any]:
    """A candidate as `gateway adoption candidates --json` prints it and the API answers it;
    `adopted_as` names the adopted prompt that already serves it (then it is not adoptable)."""
    shape = most_common_shape(candidate.shapes)
    return {
        "id": candidate.id,
        "role": candidate.role,
        "template": candidate.template,
        "variables": list(candidate.variables),
        "count": candidate.count,
        "texts": candidate.texts,
        "first_seen": codec.utc_iso(candidate.first_seen),
        "last_seen": codec.utc_iso(candidate.last_seen),
        "models": candidate.models,
        "model": shape.model,
        "temperature": shape.temperature,
        "max_tokens": shape.max_tokens,
        "examples": [dict(e) for e in candidate.examples],
        "adoptable": candidate.problem is None and adopted_as is None,
        "problem": candidate.problem,
        "adopted_as": adopted_as,
    }


def candidate_texts(candidate: Candidate) -> list[str]:
    """Every captured text the candidate groups, rebuilt from its literals and values."""
    texts = []
    for values in candidate.values:
        out = [candidate.literals[0]]
        for value, literal in zip(values, candidate.literals[1:], strict=True):
            out += [value, literal]
        texts.append("".join(out))
    return texts


def adopted_as(candidate: Candidate, index: AdoptionIndex) -> str | None:
    """The adopted prompt that already serves the candidate: its template is bound (the same
    literals), or one of its captured texts matches an adopted template; None when none does."""
    if not index.size:
        return None
    for template in index.templates:
        if template.literals == candidate.literals:
            return template.name
    for text in candidate_texts(candidate):
        match = index.match(text)
        if match is not None:
            return match.template.name
    return None


async def list_adopted(
    store: Store, snapshot: RegistrySnapshot | None = None
) -> list[tuple[Candidate, str | None]]:
    """The candidates, each with the adopted prompt already serving it (or None).

    `snapshot`: the registry to look for adopted prompts in (the app's in-memory one); when
    None it is read from the store, which for 200 prompts of 20 versions costs some 60 ms, and
    only when there is a candidate to match."""
    found = await list_candidates(store)
    if not found:
        return []
    index = build_index(snapshot if snapshot is not None else await store.snapshot())
    return [(c, adopted_as(c, index)) for c in found]


def adoption_result(version: PromptVersion, candidate: Candidate) -> dict[str, Any]:
    """What adopting answered: `{name, candidate, version: {...every field of §3}}`."""
    return {
        "name": version.name,
        "candidate": candidate.id,
        "version": codec.version_to_dict(version),
    }


async def list_candidates(store: Store) -> list[Candidate]:
    """The candidates of everything captured now, most called first.

    Grouping is CPU work bounded by `core.candidates`' budgets; it runs in a worker thread so
    the event loop keeps serving (every other request, /healthz included) meanwhile."""
    captured = await store.captured()
    return await asyncio.to_thread(find_candidates, captured, clock=time.monotonic)


async def find_candidate(store: Store, candidate_id: str) -> Candidate:
    """The candidate with this id, or CandidateNotFound listing the ids there are."""
    found = await list_candidates(store)
    for candidate in found:
        if candidate.id == candidate_id:
            return candidate
    known = ", ".join(c.id for c in found[:10]) or "none: is adoption.capture on?"
    raise CandidateNotFound(
        f"No adoption candidate {candidate_id!r} (candidates: {known}). List them with: "
        "gateway adoption candidates",
        param="candidate",
    )


async def adopt_candidate(
    store: Store,
    candidate_id: str,
    name: str,
    renames: Mapping[str, str],
    *,
    actor: str,
    clock: Callable[[], datetime],
    new_id: Callable[[], str],
) -> dict[str, Any]:
    """Create version 1.0.0 of prompt `name` from the candidate, active and bound; audited.

    Raises (writing nothing) InvalidPrompt for a bad name, CandidateNotFound, InvalidRequest for
    a `--var` the template lacks or a candidate that is ambiguous, VersionConflict when the name
    exists.
    """
    validate_name(name)
    candidate = await find_candidate(store, candidate_id)
    adopted_variables(candidate, renames)  # refused before the write transaction opens
    holder = adopted_as(candidate, build_index(await store.snapshot()))
    if holder is not None:
        raise VersionConflict(
            f"Candidate {candidate.id} is already served by adopted prompt {holder!r} (its "
            "template, or one of its texts, matches that prompt's); adopt it once. Reword "
            f"{holder!r} instead.",
            param="candidate",
        )
    change = await store.apply(
        name,
        lambda state, _: plan_adopt(
            state, candidate, renames, new_id=new_id(), actor=actor, now=clock()
        ),
    )
    # The change made it the active version (the plan's value does not carry is_active).
    return adoption_result(replace(change.versions[0], is_active=True), candidate)
