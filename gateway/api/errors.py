"""Errors on the wire: OpenAI's JSON shape, with the gateway's headers.

The Litestar part of the app (feedback, admin, operations) answers every failure in the same
shape as the proxy: the gateway's own errors with their status and code, Litestar's (404, 405,
413, validation) mapped onto OpenAI's types, and anything unexpected as a logged 500 that says
nothing about the internals. No exception escapes as a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway.errors import GatewayError

log = logging.getLogger("gateway.api")

_TYPES = {401: "authentication_error", 403: "permission_error"}
_CODES = {
    400: "invalid_request",
    401: "invalid_admin_token",
    403: "insufficient_role",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "rate_limited",
}


def error_body(exc: GatewayError) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` as bytes."""
    return orjson.dumps(exc.to_openai())


def openai_error(status: int, message: str, code: str, param: str | None = None) -> Response[Any]:
    """A Litestar response in OpenAI's error shape."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(body, status_code=status, media_type="application/json")


def gateway_error_handler(_: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    """A deliberate gateway error: its status, type and code."""
    headers = {"retry-after": str(exc.retry_after)} if exc.retry_after is not None else None
    return Response(
        exc.to_openai(), status_code=exc.status, media_type="application/json", headers=headers
    )


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own errors (unknown route, wrong method, body too large, bad input)."""
    status = exc.status_code
    code = _CODES.get(status, "internal_error" if status >= 500 else "invalid_request")
    message = str(exc.detail)
    if status == 404 and message == "Not Found":
        message = (
            f"Unknown path {request.url.path}. The gateway serves the OpenAI API under /v1, "
            "the console under /ui, the admin API under /admin (described at /schema), /healthz, "
            "/readyz and /metrics."
        )
    elif status == 405 and message == "Method Not Allowed":
        message = f"{request.method} is not allowed on {request.url.path}."
    return openai_error(status, message, code)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything unexpected: logged with its traceback, answered without details."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return openai_error(
        500, "The gateway failed to handle this request; the error is logged.", "internal_error"
    )
