"""The admin API under /admin (PRODUCT §6.1): bearer tokens with roles, JSON in and out.

One controller per noun: prompts (`admin_prompts`), experiments (`admin_experiments`), adoption
(`admin_adoption`) and the audit log (here). Every route is guarded by `auth.require_role`,
which reads the role each route needs from `auth.ROUTE_ROLES`; a test walks the OpenAPI schema
so no route can skip the table. Handlers only call the use cases the command line calls too, and
answer the shapes its `--json` prints, typed in `admin_models` so that /schema is exact.
"""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import QueryParameter

from gateway.api.admin_adoption import adoption_controller
from gateway.api.admin_base import AdminContext, AdminController, documented
from gateway.api.admin_experiments import experiment_controller
from gateway.api.admin_models import AuditOut, shaped
from gateway.api.admin_prompts import prompt_controller
from gateway.stores import codec

SECURITY = Components(
    security_schemes={
        "adminToken": SecurityScheme(
            type="http",
            scheme="bearer",
            description="An admin token (admin_tokens or GATEWAY_ADMIN_TOKENS), whose role "
            "(viewer, editor or admin) decides which routes it may call.",
        )
    }
)
"""The OpenAPI security scheme the admin controllers name."""


def admin_controllers(ctx: AdminContext) -> list[type[AdminController]]:
    """The /admin controllers, bound to this app's store, registry, settings and upstream."""
    store = ctx.store

    class AuditController(AdminController):
        """The audit log: every create, test run, promotion, rollback and experiment change."""

        path = "/admin/audit"
        tags = ["audit"]  # noqa: RUF012 (Litestar's Controller attribute)

        @get("/", summary="Audit log, newest first", responses=documented())
        async def audit(
            self,
            prompt: Annotated[str | None, QueryParameter(description="Only this prompt")] = None,
            limit: Annotated[int, QueryParameter(ge=1, le=1000, description="How many")] = 50,
        ) -> list[AuditOut]:
            """The newest `limit` entries (of one prompt when named), newest first."""
            entries = await store.audit(prompt_name=prompt, limit=limit)
            return [shaped(codec.audit_to_dict(e), AuditOut) for e in reversed(entries)]

    return [
        prompt_controller(ctx),
        experiment_controller(ctx),
        adoption_controller(ctx),
        AuditController,
    ]
