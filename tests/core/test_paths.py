"""Which request paths may be forwarded, and which query parameters carry a client's key."""

from __future__ import annotations

import pytest

from gateway.core.paths import upstream_path, without_key_parameters
from gateway.errors import InvalidPath


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/models",
        "/files/file-1/content",
        "/models/ft:gpt-4o:org::id",
        "/a%20b",
        "/x@y",
        "/.well",
    ],
)
def test_plain_paths_are_returned_unchanged(path: str) -> None:
    """A plain sequence of segments is forwarded exactly as written."""
    assert upstream_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "models",
        "/..",
        "/.",
        "/a/../b",
        "/%2e%2e",
        "/%2E.",
        "/..;x",
        "/a%2fb",
        "/a%5Cb",
        "/a\\b",
        "//a",
        "/a/",
        "/a//b",
        "/%25",
        "/%2",
        "/%0a",
        "/%7f",
        "/é",
        "/a b",
        '/a"b',
        "/a%c3",
    ],
)
def test_paths_that_could_leave_the_base_path_are_refused(path: str) -> None:
    """Dot segments in any spelling, encoded separators, empty segments, odd bytes: refused."""
    with pytest.raises(InvalidPath):
        upstream_path(path)


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("api_key=sk-1&limit=2", "limit=2"),
        ("limit=2&API_KEY=sk-1", "limit=2"),
        ("key=sk-1", ""),
        ("api%5Fkey=sk-1&order=asc", "order=asc"),
        ("api-key=sk-1&after=x", "after=x"),
        ("limit=2&keyword=x", "limit=2&keyword=x"),
        ("apikey=sk-1&access_token=t&limit=1", "limit=1"),
    ],
)
def test_key_parameters_are_removed(query: str, kept: str) -> None:
    """Only the parameters that carry a provider key are dropped; the rest keep their order."""
    assert without_key_parameters(query) == kept
