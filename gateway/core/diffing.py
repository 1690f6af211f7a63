"""A readable unified diff between two prompt versions: parameters first, then each message."""

from __future__ import annotations

import difflib

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
