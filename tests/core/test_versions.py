"""Semantic versions: parsing and precedence."""

from __future__ import annotations

import pytest

from gateway.core.versions import parse_version
from gateway.errors import InvalidPrompt

ORDERED = [
    "0.9.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0",
]


def test_precedence_follows_semver() -> None:
    """Sorting by the parsed version gives semver precedence (numbers compare as numbers)."""
    shuffled = list(reversed(ORDERED))
    assert sorted(shuffled, key=parse_version) == ORDERED


@pytest.mark.parametrize("text", ["1.2", "v1.2.0", "01.2.0", "1.2.0+build", "1.2.0-", "", "latest"])
def test_invalid_versions_are_refused_with_the_value(text: str) -> None:
    """Anything but MAJOR.MINOR.PATCH(-prerelease) is refused, naming the value."""
    with pytest.raises(InvalidPrompt, match="is not a semantic version"):
        parse_version(text)
