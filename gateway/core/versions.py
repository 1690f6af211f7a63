"""Semantic versions: parsing and precedence (semver 2.0, without build metadata)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import InvalidPrompt

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
)

# A prerelease identifier sorts numerically when it is a number, and numbers sort before words.
PrereleaseKey = tuple[tuple[int, int, str], ...]


@dataclass(frozen=True, slots=True, order=True)
class SemVer:
    """A parsed version; comparison follows semver precedence (1.0.0-rc.1 < 1.0.0 < 1.0.1)."""

    major: int
    minor: int
    patch: int
    is_release: bool
    prerelease_key: PrereleaseKey
    text: str

    def __str__(self) -> str:
        return self.text


def parse_version(text: str) -> SemVer:
    """Parse MAJOR.MINOR.PATCH with an optional -prerelease; anything else is InvalidPrompt."""
    match = _SEMVER.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidPrompt(
            f"Version {text!r} is not a semantic version: use MAJOR.MINOR.PATCH, "
            "optionally with -prerelease (e.g. 1.2.0 or 1.3.0-rc.1).",
            param="version",
        )
    major, minor, patch, pre = match.groups()
    key: PrereleaseKey = ()
    if pre:
        key = tuple(
            (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")
        )
    return SemVer(int(major), int(minor), int(patch), pre is None, key, text)
