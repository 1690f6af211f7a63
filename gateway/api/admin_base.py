"""What every admin controller shares: the guard, the body limit, error shapes, the file body.

`AdminController` is the base of the /admin controllers: `auth.require_role` guards each route
(the table in `auth.ROUTE_ROLES`), bodies are capped at `MAX_ADMIN_BODY_BYTES` (413), and
Litestar's own 400s (malformed JSON, a field of the wrong type) come out in OpenAI's shape with
the field named.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, cast

import orjson
from litestar import Controller, Request, Response
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.exceptions import ClientException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation, Reference, Schema
from litestar.typing import FieldDefinition

from gateway.api.admin_models import ErrorBody, PromptFile
from gateway.api.auth import Principal, require_role
from gateway.api.errors import openai_error
from gateway.core.jsondepth import check_depth
from gateway.errors import InvalidBody
from gateway.prompts import PromptRegistry
from gateway.settings import Settings
from gateway.stores.base import Store
from gateway.upstream.base import Upstream

log = logging.getLogger("gateway.admin")


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the admin handlers work with, built by the app (`api/app.py`)."""

    store: Store
    registry: PromptRegistry
    settings: Settings
    upstream: Upstream
    """The app's provider client, which prompt test runs send through."""


MAX_ADMIN_BODY_BYTES = 1024 * 1024
"""Largest admin request body (a prompt file is a few KiB); larger ones get 413."""

_ERRORS = {
    400: "Invalid request: malformed JSON, a field of the wrong type, or a prompt file with errors",
    401: "Missing or unknown admin token (invalid_admin_token)",
    403: "The token's role is too low (insufficient_role)",
    404: "No such prompt, version or experiment (the message suggests close names)",
    409: "Conflicts with the stored state (nothing was written)",
    413: "The body is larger than 1 MiB",
    502: "The tests could not reach a provider (test_run_aborted): nothing was stored",
}


def documented(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a route answers, always 400, 401 and 403 included
    (400 replaces the entry Litestar adds in its own error shape)."""
    return {
        status: ResponseSpec(ErrorBody, description=_ERRORS[status], generate_examples=False)
        for status in sorted({400, 401, 403, *statuses})
    }


def client_error_handler(_: Request[Any, Any, Any], exc: ClientException) -> Response[Any]:
    """Litestar's 4xx in OpenAI's shape; a bad field is named in the message and `param`."""
    if isinstance(exc.__cause__, SerializationException):
        return openai_error(400, f"The body is not valid JSON: {exc.detail}.", "invalid_json")
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0] if isinstance(exc.extra[0], dict) else {}
        key, problem = first.get("key"), first.get("message", exc.detail)
        if key in (None, "data"):  # the body as a whole (msgspec names an unknown field)
            return openai_error(400, f"Invalid body: {problem}.", "invalid_request")
        source = getattr(first.get("source"), "value", first.get("source")) or "body"
        where = "body field" if source == "body" else f"{source} parameter"
        return openai_error(400, f"Invalid {where} {key!r}: {problem}.", "invalid_request", key)
    if exc.status_code == 413:
        return openai_error(
            413,
            f"The body is larger than the admin API's limit of {MAX_ADMIN_BODY_BYTES} bytes.",
            "request_too_large",
        )
    return openai_error(exc.status_code, str(exc.detail), "invalid_request")


class AdminController(Controller):
    """Base of the /admin controllers: guarded, body-limited, errors in OpenAI's shape."""

    guards = [require_role]  # noqa: RUF012 (Litestar's Controller attributes)
    request_max_body_size = MAX_ADMIN_BODY_BYTES
    exception_handlers = {ClientException: client_error_handler}  # noqa: RUF012
    security = [{"adminToken": []}]  # noqa: RUF012


@dataclass
class OptionalBody(Operation):
    """An operation whose request body may be left out (Litestar marks every body required)."""

    def __post_init__(self) -> None:
        if self.request_body is not None and not isinstance(self.request_body, Reference):
            self.request_body.required = False


def principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller, as `auth.require_role` left it."""
    return cast(Principal, request.state.principal)


def audited(request: Request[Any, Any, Any], action: str, target: str) -> str:
    """The audit actor (the token's name), logging the write about to happen."""
    actor = principal(request).name
    log.info("admin %s %s by %s", action, target, actor)
    return actor


# ---- the prompt file body ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptFileBody:
    """A request body holding one prompt file as JSON, not yet validated."""

    doc: object


class PromptFileDTO(AbstractDTO[PromptFileBody]):
    """Reads a prompt file body as JSON and documents it as `PromptFile`.

    Validation is left to `core.promptfile.parse_prompt_file`, the parser `prompts push` uses,
    so that the API refuses exactly what the command line refuses, with the same messages.
    """

    @classmethod
    def generate_field_definitions(
        cls, model_type: type[Any]
    ) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        """Nothing to build: decoding is `decode_bytes`."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        schema: Reference | Schema = schema_creator.for_field_definition(
            FieldDefinition.from_annotation(PromptFile)
        )
        return schema

    def decode_bytes(self, value: bytes) -> PromptFileBody:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidBody(f"The body is not valid JSON: {exc}.") from None
        check_depth(value, doc)
        return PromptFileBody(doc)

    def decode_builtins(self, value: Any) -> PromptFileBody:
        return PromptFileBody(value)
