"""Admin authentication: bearer tokens to a Principal, and the role each admin route needs.

Roles, each including the ones before it (PRODUCT §6.1): `viewer` (every GET), `editor` (create
versions, run tests, experiments, promotions that pass the gate, rollback), `admin` (forced
promotion, concluding experiments, everything else). `ROUTE_ROLES` is the one table of which role
each route needs; the guard reads it, and a test checks every /admin route is in it, so a new
route cannot skip the check.

Tokens are compared as SHA-256 digests with `hmac.compare_digest`, against every configured
token without stopping early, so the time taken says nothing about which bytes matched. They
never appear in messages, logs or spans.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from gateway.errors import InsufficientRole, InvalidAdminToken
from gateway.settings import ROLES, AdminToken, Role

log = logging.getLogger("gateway.auth")

ROUTE_ROLES: dict[tuple[str, str], Role] = {
    ("GET", "/admin/prompts"): "viewer",
    ("POST", "/admin/prompts"): "editor",
    ("GET", "/admin/prompts/{name}"): "viewer",
    ("GET", "/admin/prompts/{name}/versions/{version}"): "viewer",
    ("POST", "/admin/prompts/{name}/versions/{version}/render"): "viewer",
    ("POST", "/admin/prompts/{name}/versions/{version}/test"): "editor",
    ("GET", "/admin/prompts/{name}/resolve"): "viewer",
    ("GET", "/admin/prompts/{name}/diff"): "viewer",
    ("POST", "/admin/prompts/{name}/promote"): "editor",
    ("POST", "/admin/prompts/{name}/rollback"): "editor",
    ("GET", "/admin/experiments"): "viewer",
    ("POST", "/admin/experiments"): "editor",
    ("GET", "/admin/experiments/{id}"): "viewer",
    ("POST", "/admin/experiments/{id}/stop"): "editor",
    ("GET", "/admin/experiments/{id}/results"): "viewer",
    ("POST", "/admin/experiments/{id}/conclude"): "admin",
    ("GET", "/admin/audit"): "viewer",
    ("GET", "/admin/adoption/candidates"): "viewer",
    ("POST", "/admin/adoption/adopt"): "editor",
}
"""(method, route path template as in the OpenAPI schema) -> the lowest role allowed."""

FORCE_ROLE: Role = "admin"
"""The role a forced promotion needs (`force` in the body of an editor's promote route)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the token's name (the audit actor) and its role."""

    name: str
    role: Role

    def allows(self, needed: Role) -> bool:
        """Whether this role includes `needed`."""
        return ROLES.index(self.role) >= ROLES.index(needed)


class Authenticator:
    """Checks `Authorization: Bearer <token>` against the configured admin tokens."""

    def __init__(self, tokens: Sequence[AdminToken]) -> None:
        self._tokens = tuple(tokens)
        if not self._tokens:
            log.warning(
                "no admin tokens are configured, so every /admin call is refused; add one with "
                "GATEWAY_ADMIN_TOKENS=name:role:token (role viewer, editor or admin; a token of at "
                "least 16 characters) or admin_tokens in the config file"
            )

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller, or InvalidAdminToken (401) for a missing or unknown token."""
        if not self._tokens:
            raise _no_tokens()
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidAdminToken(
                "Send an admin token as `Authorization: Bearer <token>`.", param="authorization"
            )
        found = self.token_for(token)
        return Principal(found.name, found.role)

    def token_for(self, token: str) -> AdminToken:
        """The configured token `token` is, or InvalidAdminToken (401)."""
        if not self._tokens:
            raise _no_tokens()
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: AdminToken | None = None
        for candidate in self._tokens:  # every one, always: no early exit to time
            if hmac.compare_digest(candidate.token_sha256, digest):
                found = candidate
        if found is None:
            raise InvalidAdminToken("The admin token is not valid.", param="authorization")
        return found

    @property
    def tokens(self) -> tuple[AdminToken, ...]:
        """The configured tokens (their digests; never the tokens)."""
        return self._tokens


def require_role(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Litestar guard: authenticate the caller and check ROUTE_ROLES for this route.

    The Principal is left in `connection.state.principal` for the handler (the audit actor).
    """
    authenticator: Authenticator = connection.app.state.authenticator
    principal = authenticator.authenticate(connection.headers.get("authorization"))
    template = str(connection.scope.get("path_template", ""))
    method = str(getattr(connection, "method", "GET"))
    require(principal, role_for(method, template), f"{method} {template}")
    connection.state.principal = principal


def require(principal: Principal, needed: Role, what: str) -> None:
    """InsufficientRole (403), naming the role needed, unless `principal` has it."""
    if not principal.allows(needed):
        raise InsufficientRole(
            f"{what} needs the {needed} role; the token {principal.name!r} has {principal.role}."
        )


def role_for(method: str, path_template: str) -> Role:
    """The role ROUTE_ROLES names for this route; a route missing from it needs admin."""
    return ROUTE_ROLES.get((method, path_template), "admin")


def _no_tokens() -> InvalidAdminToken:
    return InvalidAdminToken(
        "The admin API has no tokens configured, so it refuses every call. Add one with "
        "GATEWAY_ADMIN_TOKENS=name:role:token or admin_tokens in the config file."
    )
