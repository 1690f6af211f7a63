"""Prompt files: the per-version `client_system` field, at the top level and under versions:."""

from __future__ import annotations

import pytest

from gateway.core.promptfile import parse_prompt_file
from gateway.errors import InvalidPrompt

ONE = {"name": "p", "version": "1.0.0", "content": "Hi {{x}}."}


def test_client_system_defaults_to_replace() -> None:
    """A file that does not say client_system replaces the client's system messages."""
    assert parse_prompt_file(ONE, "p.yaml").drafts[0].client_system == "replace"


def test_client_system_keep_is_read_at_the_top_and_per_version() -> None:
    """client_system is a version field: at the top level, or in each item of versions:."""
    assert parse_prompt_file({**ONE, "client_system": "keep"}, "p.yaml").drafts[
        0
    ].client_system == ("keep")
    versions = {
        "name": "p",
        "versions": [
            {"version": "1.0.0", "content": "a"},
            {"version": "1.1.0", "content": "b", "client_system": "keep"},
        ],
    }
    drafts = parse_prompt_file(versions, "p.yaml").drafts
    assert [d.client_system for d in drafts] == ["replace", "keep"]


@pytest.mark.parametrize("value", ["Keep", "append", True, None, ["keep"]])
def test_other_client_system_values_are_refused_naming_file_and_version(value: object) -> None:
    """Only keep and replace are accepted; the error names the file, the version and both values."""
    doc = {"name": "p", "versions": [{"version": "1.1.0", "content": "b", "client_system": value}]}
    with pytest.raises(InvalidPrompt) as caught:
        parse_prompt_file(doc, "prompts/p.yaml")
    message = caught.value.message
    assert message.startswith("prompts/p.yaml: client_system of p@1.1.0 must be 'replace'")
    assert "'keep'" in message and repr(value) in message
