"""A readable unified diff between two prompt versions: parameters first, then each message."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from gateway.core.model import PromptVersion


def describe(version: PromptVersion) -> list[str]:
    """The version as lines of text: its parameters, then each message under its role."""
    lines = [
        f"model: {version.model}",
        f"temperature: {version.temperature}",
        f"max_tokens: {version.max_tokens}",
        f"tags: {', '.join(version.tags)}",
        f"variables: {', '.join(version.variables)}",
        f"client_system: {version.client_system}",
    ]
    for message in version.messages:
        lines.append(f"--- {message.role}")
        lines.extend(message.content.splitlines())
    return lines


def diff_versions(old: PromptVersion, new: PromptVersion) -> str:
    """Unified diff from `old` to `new`; empty when their content is the same."""
    return "\n".join(
        difflib.unified_diff(
            describe(old), describe(new), fromfile=old.label, tofile=new.label, lineterm=""
        )
    )


DiffKind = Literal["same", "changed", "removed", "added"]


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One row of a side-by-side diff: the old line and the new one (None where a side has no
    line), and how they differ: `same`, `changed`, `removed` or `added`."""

    kind: DiffKind
    old: str | None
    new: str | None


def side_by_side(old: PromptVersion, new: PromptVersion) -> list[DiffRow]:
    """The two versions' lines (as `describe` writes them) aligned in rows, for a two-column
    view; the same lines as `diff_versions` compares."""
    left, right = describe(old), describe(new)
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows.extend(
                DiffRow("same", a, b) for a, b in zip(left[i1:i2], right[j1:j2], strict=True)
            )
        elif tag == "delete":
            rows.extend(DiffRow("removed", a, None) for a in left[i1:i2])
        elif tag == "insert":
            rows.extend(DiffRow("added", None, b) for b in right[j1:j2])
        else:
            olds, news = left[i1:i2], right[j1:j2]
            for k in range(max(len(olds), len(news))):
                a = olds[k] if k < len(olds) else None
                b = news[k] if k < len(news) else None
                kind: DiffKind = "changed"
                if a is None or b is None:
                    kind = "removed" if b is None else "added"
                rows.append(DiffRow(kind, a, b))
    return rows
