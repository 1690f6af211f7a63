"""The mock's `POST /embeddings`: deterministic unit vectors, as floats or base64.

Each input (a string, or an array of token ids) gets a vector derived from sha256 of the input
and the dimension's block number, scaled to unit length: the same input always gets the same
vector, different inputs get nearly orthogonal ones. `dimensions` sets the length (default 3072 for
`text-embedding-3-large`, else 1536). `encoding_format: base64` sends the little-endian float32
bytes in base64, as OpenAI does (the SDK asks for base64 by default and decodes it); the float
form holds the same float32 values.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.upstream.mock_wire import BadRequest, MockResponse, as_int, count, json_response

MAX_DIMENSIONS = 8192
MAX_INPUTS = 2048


def embeddings(doc: Mapping[str, Any]) -> MockResponse:
    """Answer an embeddings request: one vector per input, in order."""
    inputs = _inputs(doc.get("input"))
    model = str(doc.get("model") or "mock-embedding")
    default = 3072 if model.startswith("text-embedding-3-large") else 1536
    dimensions = as_int(doc, "dimensions", default, 1, MAX_DIMENSIONS)
    encoding = doc.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest(
            f"Invalid value for 'encoding_format': {encoding!r}; use 'float' or 'base64'.",
            "encoding_format",
        )
    data = []
    for index, item in enumerate(inputs):
        values = vector(orjson.dumps(item), dimensions)
        packed = struct.pack(f"<{dimensions}f", *values)
        embedding: Any = (
            base64.b64encode(packed).decode()
            if encoding == "base64"
            else list(struct.unpack(f"<{dimensions}f", packed))  # the float32 values, exactly
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(len(i) if isinstance(i, list) else count(i) for i in inputs)
    return json_response(
        200,
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


def vector(seed: bytes, dimensions: int) -> list[float]:
    """A unit vector of `dimensions` values in [-1, 1] before scaling, derived from `seed`."""
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + b"/" + str(block).encode()).digest()
        raw.extend(v / 2**31 - 1 for v in struct.unpack("<8I", digest))
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def _inputs(raw: Any) -> list[str | list[int]]:
    """The inputs as a list: strings, or token arrays; anything else is refused."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(_is_token(t) for t in raw):
        return [raw]  # one input given as token ids
    if isinstance(raw, list) and 0 < len(raw) <= MAX_INPUTS:
        items: list[str | list[int]] = []
        for item in raw:
            if isinstance(item, str) or (
                isinstance(item, list) and item and all(_is_token(t) for t in item)
            ):
                items.append(item)
            else:
                break
        else:
            return items
    raise BadRequest(
        "'input' must be a non-empty string, an array of up to 2048 strings, an array of token "
        "ids, or an array of such arrays.",
        "input",
    )


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
