"""The diff between two prompt versions shows every part of their content."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.core.diffing import diff_versions
from gateway.core.model import PromptVersion
from gateway.core.rendering import Message


def version(number: int, content: str, **fields: object) -> PromptVersion:
    return PromptVersion(
        id=f"v{number}",
        name="p",
        version=f"1.{number}.0",
        number=number,
        messages=(Message("system", content),),
        variables=(),
        model="gpt-4o-mini",
        max_tokens=None,
        temperature=None,
        tags=(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        created_by="t",
        **fields,  # type: ignore[arg-type]
    )


def test_same_content_has_no_diff() -> None:
    """Two versions with equal content differ in nothing but their labels."""
    assert diff_versions(version(1, "Hi."), version(2, "Hi.")) == ""


def test_a_changed_message_line_is_shown() -> None:
    """A changed line of a message appears as removed and added."""
    diff = diff_versions(version(1, "Be brief."), version(2, "Be thorough."))
    assert "-Be brief." in diff and "+Be thorough." in diff


def test_client_system_is_part_of_the_diff() -> None:
    """Versions that differ only in client_system show that difference."""
    diff = diff_versions(version(1, "Hi."), version(2, "Hi.", client_system="keep"))
    assert "-client_system: replace" in diff and "+client_system: keep" in diff
