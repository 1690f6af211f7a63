"""Errors on the wire: OpenAI's JSON shape, with the gateway's headers."""

from __future__ import annotations

import orjson

from gateway.errors import GatewayError


def error_body(exc: GatewayError) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` as bytes."""
    return orjson.dumps(exc.to_openai())
