"""Prompts as code: the parsed form of a prompt YAML document (PRODUCT §10), validated."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.model import PromptDraft
from gateway.core.registry import make_draft, validate_name
from gateway.core.rendering import Message
from gateway.errors import InvalidPrompt

_VERSION_KEYS = {
    "version",
    "model",
    "temperature",
    "max_tokens",
    "tags",
    "messages",
    "content",
    "variables",
    "client_system",
}
_TOP_KEYS = {"name", "versions", "tests"} | _VERSION_KEYS
_TEST_KEYS = {"id", "variables", "messages", "expect", "tags"}
_EXPECT_KEYS = {"contains", "not_contains", "regex", "json_schema", "judge"}


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a test's output must satisfy; every given check must hold."""

    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None
    judge: str | None = None


@dataclass(frozen=True, slots=True)
class PromptTest:
    """One test case: variables to render with, the user's messages, and what to expect."""

    id: str
    variables: Mapping[str, object]
    messages: tuple[Message, ...]
    expect: Expectation
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PromptFile:
    """One prompt file: the versions it describes and the tests that apply to each."""

    source: str
    name: str
    drafts: tuple[PromptDraft, ...]
    tests: tuple[PromptTest, ...]


def parse_prompt_file(doc: object, source: str) -> PromptFile:
    """Validate a loaded YAML document; every error names `source` and the field."""
    try:
        return _parse(doc, source)
    except InvalidPrompt as exc:
        if exc.message.startswith(source):
            raise
        raise InvalidPrompt(f"{source}: {exc.message}", param=exc.param) from None


def _parse(doc: object, source: str) -> PromptFile:
    top = _mapping(doc, "the file")
    _known(top, _TOP_KEYS, "")
    name = validate_name(top.get("name"))
    if "versions" in top:
        clash = sorted(k for k in _VERSION_KEYS if k in top)
        if clash:
            raise InvalidPrompt(
                f"{', '.join(clash)} must sit inside each item of versions:, not at the top level."
            )
        items = top["versions"]
        if not isinstance(items, list) or not items:
            raise InvalidPrompt("versions: must be a non-empty list.")
        drafts = tuple(
            _draft(name, _mapping(item, f"versions[{i}]"), f"versions[{i}].")
            for i, item in enumerate(items)
        )
    else:
        drafts = (_draft(name, {k: v for k, v in top.items() if k in _VERSION_KEYS}, ""),)
    seen: set[str] = set()
    for draft in drafts:
        if draft.version in seen:
            raise InvalidPrompt(f"version {draft.version} is described twice.")
        seen.add(draft.version)
    tests_raw = top.get("tests") or []
    if not isinstance(tests_raw, list):
        raise InvalidPrompt("tests: must be a list.")
    tests = tuple(_test(_mapping(t, f"tests[{i}]"), f"tests[{i}]") for i, t in enumerate(tests_raw))
    ids = [t.id for t in tests]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidPrompt(f"test id {duplicates[0]!r} is used twice.")
    return PromptFile(source, name, drafts, tests)


def _draft(name: str, item: Mapping[str, Any], where: str) -> PromptDraft:
    _known(item, _VERSION_KEYS, where)
    if "version" not in item:
        raise InvalidPrompt(f"{where}version is missing.", param="version")
    version = item["version"]
    if not isinstance(version, str):
        raise InvalidPrompt(
            f'{where}version must be a quoted string like "1.2.0", not {version!r}.',
            param="version",
        )
    if ("messages" in item) == ("content" in item):
        raise InvalidPrompt(f"{where}: give either messages or content (exactly one).")
    if "content" in item:
        content = item["content"]
        if not isinstance(content, str):
            raise InvalidPrompt(f"{where}content must be a string.", param="content")
        messages: tuple[Message, ...] = (Message("system", content),)
    else:
        messages = _messages(item["messages"], f"{where}messages")
    variables = item.get("variables")
    if variables is not None and (
        not isinstance(variables, list) or not all(isinstance(v, str) for v in variables)
    ):
        raise InvalidPrompt(f"{where}variables must be a list of names.", param="variables")
    return make_draft(
        name=name,
        version=version,
        messages=messages,
        variables=variables,
        model=item.get("model"),
        max_tokens=item.get("max_tokens"),
        temperature=item.get("temperature"),
        tags=_strings(item.get("tags") or [], f"{where}tags"),
        client_system=item.get("client_system", "replace"),
    )


def _messages(raw: object, where: str) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidPrompt(f"{where} must be a non-empty list of {{role, content}}.")
    messages = []
    for i, item in enumerate(raw):
        message = _mapping(item, f"{where}[{i}]")
        role, content = message.get("role"), message.get("content")
        if (
            not isinstance(role, str)
            or not isinstance(content, str)
            or set(message) - {"role", "content"}
        ):
            raise InvalidPrompt(f"{where}[{i}] must be {{role: ..., content: ...}} with strings.")
        messages.append(Message(role, content))
    return tuple(messages)


def _test(raw: Mapping[str, Any], where: str) -> PromptTest:
    _known(raw, _TEST_KEYS, where + ".")
    test_id = raw.get("id")
    if not isinstance(test_id, str) or not test_id:
        raise InvalidPrompt(f"{where}.id must be a non-empty string.")
    variables = _mapping(raw.get("variables") or {}, f"{where}.variables")
    expect_raw = _mapping(raw.get("expect") or {}, f"{where}.expect")
    _known(expect_raw, _EXPECT_KEYS, f"{where}.expect.")
    schema = expect_raw.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise InvalidPrompt(f"{where}.expect.json_schema must be a mapping (a JSON Schema).")
    judge = expect_raw.get("judge")
    if judge is not None and not isinstance(judge, str):
        raise InvalidPrompt(f"{where}.expect.judge must be a string (the criterion).")
    expect = Expectation(
        contains=_strings(expect_raw.get("contains") or [], f"{where}.expect.contains"),
        not_contains=_strings(expect_raw.get("not_contains") or [], f"{where}.expect.not_contains"),
        regex=_patterns(expect_raw.get("regex") or [], f"{where}.expect.regex"),
        json_schema=schema,
        judge=judge,
    )
    messages = _messages(raw["messages"], f"{where}.messages") if "messages" in raw else ()
    return PromptTest(
        test_id, variables, messages, expect, _strings(raw.get("tags") or [], f"{where}.tags")
    )


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPrompt(f"{where} must be a mapping, not {type(value).__name__}.")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidPrompt(f"{where} must be a list of strings.")
    return tuple(value)


def _patterns(value: object, where: str) -> tuple[str, ...]:
    patterns = _strings(value, where)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidPrompt(
                f"{where}: {pattern!r} is not a valid regular expression: {exc}."
            ) from None
    return patterns


def _known(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise InvalidPrompt(
            f"unknown field {where}{unknown[0]}; known fields: {', '.join(sorted(allowed))}."
        )
