"""Validate answers against OpenAI's published schemas, read from the extract next to this file.

`openai_schemas.json` is a faithful extract of OpenAI's OpenAPI description (see
extract_openai_schemas.py and OPENAI_OPENAPI_LICENSE). Two fixes make it usable with JSON Schema
2020-12, applied here when it is loaded:

- OpenAPI's `nullable: true` (still written in a few places) becomes `anyOf: [schema, null]`;
- a Response's `usage` may be null: the first events of a stream (`response.created`,
  `response.in_progress`) carry `usage: null`, as the real API and both SDKs do, although the
  spec types it as an object.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).with_name("openai_schemas.json")


def _nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable(value) for value in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _document() -> dict[str, Any]:
    doc = _nullable(orjson.loads(SCHEMAS.read_bytes()))
    response = doc["components"]["schemas"]["Response"]["allOf"][2]["properties"]
    response["usage"] = {"anyOf": [response["usage"], {"type": "null"}]}
    return {"components": doc["components"]}


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = {**_document(), "$ref": f"#/components/schemas/{name}"}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(name: str, instance: Any) -> list[str]:
    """Each way `instance` breaks the named component schema, deepest cause first; [] if valid."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: e.path)
    found = []
    for error in errors:
        leaves = _leaves(error)
        found.extend(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in leaves)
    return found


def _leaves(error: Any) -> list[Any]:
    """The innermost errors under an anyOf/oneOf failure: those name the field that is wrong.

    Of the branches, those whose `type` discriminator did not match are the wrong variant; of the
    rest, the branch with the fewest errors is taken as the one meant.
    """
    if not error.context:
        return [error]
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0] if sub.schema_path else None, []).append(sub)
    meant = [b for b in branches.values() if not any(_wrong_variant(e) for e in b)]
    best = min(meant or list(branches.values()), key=len)
    return [leaf for sub in best for leaf in _leaves(sub)]


def _wrong_variant(error: Any) -> bool:
    path = list(error.relative_path)
    return error.validator in ("enum", "const") and path[-1:] == ["type"]


def assert_valid(name: str, instance: Any) -> None:
    """Fail with every schema error when `instance` is not a valid `name`."""
    errors = schema_errors(name, instance)
    assert not errors, f"not a valid {name}:\n" + "\n".join(errors)
