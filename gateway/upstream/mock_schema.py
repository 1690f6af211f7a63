"""A small, deterministic instance of a JSON Schema: the mock's structured outputs and tool calls.

`instance(schema, text, strict=...)` builds a value that validates against `schema` for the
schemas that structured outputs and tool definitions use in practice (OpenAI's strict subset and
Pydantic's output): objects with their required properties (every property under `strict`),
strings (from `text`, shortened or padded to fit, or a sample of a known `format`), numbers and
integers within their bounds and `multipleOf`, booleans, arrays of `minItems` items (one when
allowed and none are required, so the shape of an item is visible), `enum` and `const` (the first
value), `anyOf`/`oneOf` (the first branch), `allOf` (merged), `$ref` into `$defs`/`definitions`
(any JSON pointer in the schema) and nullable types.

Limits: a string `pattern` is not solved for (a few plain candidates are tried, else `text`),
and `not`, `if`/`then`/`else`, `dependentRequired` and `uniqueItems` with more than one required
item are not honoured. Recursive schemas are cut off: past a fixed depth the generator takes
null, an empty array or only the required properties, wherever the schema allows it.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import unquote

MAX_DEPTH = 6  # past this, recursion is cut off where the schema allows it
HARD_DEPTH = 40  # a schema that requires deeper nesting gets null there (it cannot be satisfied)
FORMATS = {
    "date-time": "2023-11-14T22:13:20Z",
    "date": "2023-11-14",
    "time": "22:13:20Z",
    "duration": "P1D",
    "email": "mock@example.com",
    "idn-email": "mock@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri-reference": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "json-pointer": "",
    "regex": ".*",
}
PATTERN_CANDIDATES = ("", "a", "A", "0", "a0", "mock", "Mock", "00000000", "2023-11-14")


def instance(schema: Any, text: str, *, strict: bool = False) -> Any:
    """A value valid against `schema`; the same inputs always give the same value.

    `text` fills strings; `strict` (OpenAI's strict mode) fills every property of an object,
    not only the required ones.
    """
    return _Generator(schema, text, strict).make(schema, 0)


class _Generator:
    def __init__(self, root: Any, text: str, strict: bool) -> None:
        self.root = root
        self.text = text or "mock"
        self.strict = strict

    def make(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, dict) or depth > HARD_DEPTH:
            return None  # `true`, `false` or malformed: null is as good as anything
        if "$ref" in schema:
            target = self.resolve(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            merged = merge(target, rest) if rest else target
            return self.make(merged, depth + 1)
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged = merge(merged, self.flatten(part, depth))
            return self.make(merged, depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                rest = {k: v for k, v in schema.items() if k != key}
                return self.make(merge(rest, self.pick(branches, depth)), depth + 1)
        kind = self.kind(schema, depth)
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind == "string":
            return self.string(schema)
        if kind in ("integer", "number"):
            return number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self.text  # an empty schema accepts anything

    def resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return {}  # remote references are not followed: anything goes
        node = self.root
        for token in ref[1:].split("/")[1:]:
            key = unquote(token).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return {}
        return node

    def flatten(self, schema: Any, depth: int) -> dict[str, Any]:
        """A schema with its top-level `$ref` and `allOf` expanded, for merging."""
        if not isinstance(schema, dict) or depth > HARD_DEPTH:
            return {}
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return merge(self.flatten(self.resolve(schema["$ref"]), depth + 1), rest)
        if "allOf" in schema:
            out = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                out = merge(out, self.flatten(part, depth + 1))
            return out
        return schema

    def pick(self, branches: list[Any], depth: int) -> Any:
        """The first branch; past MAX_DEPTH a null branch, if any, to end a recursion."""
        if depth > MAX_DEPTH:
            for branch in branches:
                if isinstance(branch, dict) and self.kind(branch, depth) == "null":
                    return branch
        return branches[0]

    def kind(self, schema: dict[str, Any], depth: int) -> str | None:
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if isinstance(k, str)]
            if "null" in kinds and (depth > MAX_DEPTH or len(kinds) == 1):
                return "null"
            kind = next((k for k in kinds if k != "null"), None)
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return None

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [r for r in schema.get("required") or () if isinstance(r, str)]
        names = list(properties) if self.strict and depth <= MAX_DEPTH else []
        names += [name for name in required if name not in names]
        minimum = schema.get("minProperties")
        if isinstance(minimum, int):
            names += [n for n in properties if n not in names][: max(0, minimum - len(names))]
        out: dict[str, Any] = {}
        for name in names:
            sub = properties.get(name, schema.get("additionalProperties", {}))
            out[name] = self.make(sub if isinstance(sub, dict) else {}, depth + 1)
        return out

    def array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", {})
        least = schema.get("minItems")
        most = schema.get("maxItems")
        count = least if isinstance(least, int) and least > 0 else 0
        if count == 0 and depth <= MAX_DEPTH and items is not False:
            count = 1
        count = max(count, len(prefix)) if prefix and depth <= MAX_DEPTH else count
        if isinstance(most, int):
            count = min(count, most)
        out = [self.make(prefix[i] if i < len(prefix) else items, depth + 1) for i in range(count)]
        return out

    def string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        value = FORMATS.get(fmt, self.text) if isinstance(fmt, str) else self.text
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            value = fit_pattern(pattern, value)
        least = schema.get("minLength")
        most = schema.get("maxLength")
        if isinstance(least, int) and len(value) < least:
            filler = value or self.text
            value = ((filler + " ") * (least // (len(filler) + 1) + 1))[:least]
        if isinstance(most, int) and len(value) > most:
            value = value[:most]
        return value


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Two schemas that must both hold, as one: properties and `required` are combined."""
    out = {**base, **extra}
    if isinstance(base.get("properties"), dict) and isinstance(extra.get("properties"), dict):
        out["properties"] = {**base["properties"], **extra["properties"]}
    if isinstance(base.get("required"), list) and isinstance(extra.get("required"), list):
        out["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    return out


def fit_pattern(pattern: str, preferred: str) -> str:
    """`preferred` if it matches, else the first plain candidate that does, else `preferred`."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return preferred
    for candidate in (preferred, *PATTERN_CANDIDATES):
        if compiled.search(candidate):
            return candidate
    return preferred


def number(schema: dict[str, Any], *, integer: bool) -> int | float:
    """The allowed value nearest 0 (a multiple of `multipleOf` if given); a float for `number`."""
    low, high = bounds(schema, integer=integer)
    value = 0.0
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        value = math.ceil(value / step) * step
        if high is not None and value > high:
            value = math.floor(high / step) * step
    return int(value) if integer else float(value)


def bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float | None, float | None]:
    """The least and greatest allowed values, exclusive bounds turned inclusive."""
    low = _num(schema.get("minimum"))
    high = _num(schema.get("maximum"))
    exclusive_low = _num(schema.get("exclusiveMinimum"))
    exclusive_high = _num(schema.get("exclusiveMaximum"))
    if exclusive_low is not None:
        nudged = math.floor(exclusive_low) + 1 if integer else _above(exclusive_low, exclusive_high)
        low = nudged if low is None else max(low, nudged)
    if exclusive_high is not None:
        nudged = math.ceil(exclusive_high) - 1 if integer else _below(exclusive_high, low)
        high = nudged if high is None else min(high, nudged)
    if integer:
        low = None if low is None else math.ceil(low)
        high = None if high is None else math.floor(high)
    return low, high


def _above(limit: float, ceiling: float | None) -> float:
    return limit + 1 if ceiling is None or ceiling - limit > 1 else (limit + ceiling) / 2


def _below(limit: float, floor: float | None) -> float:
    return limit - 1 if floor is None or limit - floor > 1 else (limit + floor) / 2


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None  # draft-4's boolean exclusiveMinimum is not supported
    return float(value)
