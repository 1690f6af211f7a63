"""Adopted prompts: the adopt plan, and matching a request's system message to a template.

`plan_adopt` turns a candidate (core.candidates) into version 1.0.0 of a new prompt, active,
with its `Adoption` binding, audited, in one change. `AdoptionIndex` is built once per registry
snapshot from every prompt's binding, so every replica matches what the store holds without a
store read per call:

- a template without variables is an exact text: one dict look-up;
- others are keyed by the first and last KEY_CHARS characters of their literal ends, so a text
  is compared (a regex anchored on every literal part, `template_pattern`) only with the
  templates that begin and end as it does, plus the few whose ends are variables or shorter
  than KEY_CHARS. A miss costs a few dict look-ups whatever the number of templates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.core.candidates import Candidate, template_pattern, template_text
from gateway.core.capture import collapse_whitespace, most_common_shape
from gateway.core.model import Adoption, AuditEntry, PromptState, PromptVersion, RegistrySnapshot
from gateway.core.registry import Change, make_draft, plan_create_version
from gateway.core.rendering import Message
from gateway.errors import InvalidRequest, VersionConflict

ADOPTED_VERSION = "1.0.0"
KEY_CHARS = 16
_IDENTIFIER = re.compile(r"[A-Za-z_]\w{0,63}")


@dataclass(frozen=True, slots=True)
class AdoptedTemplate:
    """One adopted prompt's template, compiled for matching."""

    name: str
    """The prompt's name."""
    version_id: str
    """The id of the adopted version: serving it means forwarding the body unchanged."""
    literals: tuple[str, ...]
    variables: tuple[str, ...]
    pattern: re.Pattern[str]
    """Reads the values from a text's `matching_key`, by the literals' own keys."""
    keys: tuple[str, ...]
    """The literals with whitespace runs as one space, the first's start and the last's end
    trimmed: what `matching_key` of a text holds around the values."""


@dataclass(frozen=True, slots=True)
class Match:
    """A request's system message matched an adopted template."""

    template: AdoptedTemplate
    values: Mapping[str, str]
    """The variables' values, read from the differing spans of the request's text."""


class AdoptionIndex:
    """Every adopted template of one snapshot, for `match` on the request path."""

    __slots__ = ("_both", "_exact", "_loose", "_prefix", "_suffix", "size", "templates")

    def __init__(self, templates: list[AdoptedTemplate]) -> None:
        self._exact: dict[str, AdoptedTemplate] = {}
        self._both: dict[tuple[str, str], list[AdoptedTemplate]] = {}
        self._prefix: dict[str, list[AdoptedTemplate]] = {}
        self._suffix: dict[str, list[AdoptedTemplate]] = {}
        self._loose: list[AdoptedTemplate] = []
        self.templates = tuple(templates)
        """Every adopted template, in prompt-name order."""
        self.size = len(templates)
        """How many templates are adopted (0: matching is skipped altogether)."""
        for t in templates:
            keys = t.keys
            if not t.variables:
                self._exact.setdefault(keys[0], t)
                continue
            head, tail = keys[0], keys[-1]
            if len(head) >= KEY_CHARS and len(tail) >= KEY_CHARS:
                key = (head[:KEY_CHARS], tail[-KEY_CHARS:])
                self._both.setdefault(key, []).append(t)
            elif len(head) >= KEY_CHARS:
                self._prefix.setdefault(head[:KEY_CHARS], []).append(t)
            elif len(tail) >= KEY_CHARS:
                self._suffix.setdefault(tail[-KEY_CHARS:], []).append(t)
            else:
                self._loose.append(t)

    def match(self, text: str) -> Match | None:
        """The adopted template `text` matches, with its values; None when none does.

        Whitespace runs count as one space and the ends are trimmed, as in the fingerprint that
        counted the calls (`capture.fingerprint`): every spelling that was counted is served.
        The values are read from the text so collapsed."""
        text = matching_key(text)
        exact = self._exact.get(text)
        if exact is not None:
            return Match(exact, {})
        if self._both:
            found = self._both.get((text[:KEY_CHARS], text[-KEY_CHARS:]))
            if found is not None and (hit := _first(found, text)) is not None:
                return hit
        if self._prefix:
            found = self._prefix.get(text[:KEY_CHARS])
            if found is not None and (hit := _first(found, text)) is not None:
                return hit
        if self._suffix:
            found = self._suffix.get(text[-KEY_CHARS:])
            if found is not None and (hit := _first(found, text)) is not None:
                return hit
        return _first(self._loose, text) if self._loose else None


EMPTY_INDEX = AdoptionIndex([])


matching_key = collapse_whitespace
"""A text as the index matches it: as its fingerprint reads it (`core.capture`)."""


def _collapsed(literal: str) -> str:
    """A literal with every whitespace run as one space, a run at either end kept as one."""
    if not literal:
        return literal
    core = collapse_whitespace(literal)
    if not core:
        return " "
    return (" " if literal[0].isspace() else "") + core + (" " if literal[-1].isspace() else "")


def _first(templates: list[AdoptedTemplate], text: str) -> Match | None:
    for t in templates:
        m = t.pattern.fullmatch(text)
        if m is not None:
            return Match(t, dict(zip(t.variables, m.groups(), strict=True)))
    return None


def build_index(snapshot: RegistrySnapshot) -> AdoptionIndex:
    """The index of every adopted prompt of `snapshot` whose adopted version it holds."""
    templates: list[AdoptedTemplate] = []
    for name in sorted(snapshot.prompts):
        state = snapshot.prompts[name]
        if state.adoption is None:
            continue
        version = state.by_version.get(state.adoption.version)
        if version is None or not version.template.messages:
            continue
        parts = version.template.messages[0].parts
        literals, variables = parts[0::2], parts[1::2]
        keys = [_collapsed(literal) for literal in literals]
        keys[0] = keys[0].lstrip()  # apart: with no variable, the first literal is the last
        keys[-1] = keys[-1].rstrip()
        templates.append(
            AdoptedTemplate(
                name, version.id, literals, variables, template_pattern(keys), tuple(keys)
            )
        )
    return AdoptionIndex(templates)


def adopted_variables(candidate: Candidate, renames: Mapping[str, str]) -> tuple[str, ...]:
    """The candidate's variable names after `renames` (`{"var1": "customer_name"}`).

    Raises InvalidRequest naming the problem: a variable the template lacks, a name that is not
    an identifier, or two variables given one name.
    """
    unknown = [k for k in renames if k not in candidate.variables]
    if unknown:
        has = ", ".join(candidate.variables) or "no variables"
        raise InvalidRequest(
            f"Candidate {candidate.id} has no variable {', '.join(unknown)} (it has {has}); "
            "rename only those, as --var var1=customer_name.",
            param="variables",
        )
    names = tuple(renames.get(v, v) for v in candidate.variables)
    for new in names:
        if _IDENTIFIER.fullmatch(new) is None:
            raise InvalidRequest(
                f"Variable name {new!r} is invalid: use letters, digits and '_', not starting "
                "with a digit, at most 64 characters.",
                param="variables",
            )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidRequest(
            f"Two variables of candidate {candidate.id} would both be named "
            f"{', '.join(twice)}; give each its own name.",
            param="variables",
        )
    return names


def plan_adopt(
    state: PromptState,
    candidate: Candidate,
    renames: Mapping[str, str],
    *,
    new_id: str,
    actor: str,
    now: datetime,
) -> Change:
    """Version 1.0.0 of a new prompt from the candidate, active, bound, audited: one change.

    The model, temperature and max_tokens are those of the candidate's most common call. Raises
    (writing nothing) VersionConflict when the name exists, InvalidRequest for a candidate with
    a problem or bad variable names.
    """
    if state.versions:
        raise VersionConflict(
            f"Prompt {state.name!r} already exists; adoption creates a new prompt. Choose "
            "another --name.",
            param="name",
        )
    if candidate.problem is not None:
        raise InvalidRequest(
            f"Candidate {candidate.id} cannot be adopted: {candidate.problem}.",
            param="candidate",
        )
    names = adopted_variables(candidate, renames)
    shape = most_common_shape(candidate.shapes)
    draft = make_draft(
        name=state.name,
        version=ADOPTED_VERSION,
        messages=[Message(candidate.role, template_text(candidate.literals, names))],
        variables=names,
        model=shape.model,
        temperature=shape.temperature
        if shape.temperature is None or shape.temperature <= 2
        else None,
        max_tokens=shape.max_tokens if shape.max_tokens is None or shape.max_tokens >= 1 else None,
        tags=("adopted",),
    )
    created = plan_create_version(state, draft, new_id=new_id, actor=actor, now=now)
    entry = AuditEntry(
        at=now,
        actor=actor,
        action="prompt.adopt",
        prompt_name=state.name,
        version=ADOPTED_VERSION,
        before={"active": None},
        after={"active": ADOPTED_VERSION, "candidate": candidate.id, "variables": list(names)},
        detail=f"from candidate {candidate.id} ({candidate.count} calls, {candidate.texts} texts)",
    )
    return Change(
        versions=created.versions,
        active=ADOPTED_VERSION,
        history=(),
        activation_changed=True,
        audit=(*created.audit, entry),
        adoption=Adoption(ADOPTED_VERSION, candidate.id, now, actor),
    )


def is_adopted_version(version: PromptVersion, template: AdoptedTemplate) -> bool:
    """Whether `version` is the adopted one itself (its body then goes upstream unchanged)."""
    return version.id == template.version_id
