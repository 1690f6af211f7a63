"""Extract from OpenAI's OpenAPI description the schemas the mock provider's tests validate against.

Run by hand, never by the tests (they read the committed `openai_schemas.json`):

    python tests/upstream/extract_openai_schemas.py path/to/openai-openapi/openapi.json

The source is `openapi.json` of https://github.com/openai/openai-openapi (MIT, see
OPENAI_OPENAPI_LICENSE next to this file); the committed extract came from commit f85dbe2,
`info.version` 2.3.0. The script keeps the closure of the root schemas below under their
original names (`#/components/schemas/...`, so every `$ref` still resolves) and drops only
annotations (descriptions, examples, titles, `x-` extensions), which never change what validates.
Fixes needed to validate with JSON Schema 2020-12 (`nullable`, the null usage of a stream's first
events) are applied when the tests load the file, in `schema_validation.py`, so this extract stays
a faithful copy of the source.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "Response",
    "ResponseStreamEvent",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
)
PREFIX = "#/components/schemas/"
ANNOTATIONS = frozenset({"description", "example", "examples", "title", "deprecated"})
# Keywords whose value maps names to schemas, holds one schema, or a list of schemas. Every other
# keyword's value (enum, const, default, required, discriminator...) is data and is kept as is.
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
SCHEMA_ONE = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "contains",
        "propertyNames",
        "if",
        "then",
        "else",
        "unevaluatedProperties",
        "unevaluatedItems",
    }
)
SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
OUTPUT = Path(__file__).with_name("openai_schemas.json")


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> list[str]:
    """The names of the roots and of every schema they reach through `$ref`, sorted."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_refs(schemas[name]))
    return sorted(seen)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = []
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith(PREFIX):
                raise ValueError(f"unexpected $ref {ref!r}")
            found.append(ref.removeprefix(PREFIX))
        for value in node.values():
            found.extend(_refs(value))
        return found
    if isinstance(node, list):
        return [name for value in node for name in _refs(value)]
    return []


def strip(schema: Any) -> Any:
    """The schema without annotations; property names such as `description` are kept."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ANNOTATIONS or key.startswith("x-"):
            continue
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strip(sub) for name, sub in value.items()}
        elif key in SCHEMA_ONE:
            out[key] = strip(value)
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [strip(sub) for sub in value]
        else:
            out[key] = value
    return out


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    """The extract written to openai_schemas.json: a provenance note and the schemas."""
    schemas = spec["components"]["schemas"]
    names = closure(schemas, ROOTS)
    return {
        "x-source": {
            "repository": "https://github.com/openai/openai-openapi",
            "file": "openapi.json",
            "commit": "f85dbe2",
            "info.version": spec["info"]["version"],
            "license": "MIT, (c) OpenAI; see OPENAI_OPENAPI_LICENSE",
            "roots": list(ROOTS),
            "changes": "only the roots' $ref closure; annotations (description, example(s), "
            "title, deprecated, x-*) removed",
            "made_by": "tests/upstream/extract_openai_schemas.py",
        },
        "components": {"schemas": {name: strip(schemas[name]) for name in names}},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(f"usage: {argv[0]} path/to/openai-openapi/openapi.json\n")
        return 2
    spec = orjson.loads(Path(argv[1]).read_bytes())
    OUTPUT.write_bytes(orjson.dumps(extract(spec), option=orjson.OPT_INDENT_2) + b"\n")
    sys.stderr.write(f"wrote {OUTPUT} ({len(extract(spec)['components']['schemas'])} schemas)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
