"""How deeply a parsed JSON body nests, checked against what the gateway can write back.

orjson reads documents nested up to 1,024 levels but writes only up to 254 ("Recursion limit
reached" at 255). A body the gateway must write again (a managed prompt injected, the
`stream_options` it adds, a stored prompt file, a captured span attribute) would fail only
then, deep inside the call; so every JSON body the gateway parses is held to the writable depth
when it is read.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidBody

# The deepest document orjson.dumps writes: a list or object counts one level, scalars none.
MAX_DEPTH = 254


def check_depth(body: bytes, doc: Any) -> None:
    """Raise InvalidBody (400 invalid_json) when `doc`, parsed from `body`, nests deeper than
    MAX_DEPTH levels.

    A body with at most MAX_DEPTH brackets cannot nest deeper, so the common case costs two
    `bytes.count` scans and no walk; a bracket-rich body is walked once, stopping at the first
    level past the limit.
    """
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return
    if not isinstance(doc, dict | list):
        return
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidBody(
                f"The JSON body nests deeper than {MAX_DEPTH} levels of arrays and objects, "
                "more than the gateway can forward; flatten the structure."
            )
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
