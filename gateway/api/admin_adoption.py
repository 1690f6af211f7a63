"""`/admin/adoption`: list candidates, adopt one (PRODUCT §14).

Handlers call the use cases of `gateway.adoption`, the ones `gateway adoption ...` calls, and
answer the shapes it prints with `--json`.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import JSONBody

from gateway.adoption import adopt_candidate, candidate_to_dict, list_adopted
from gateway.api.admin_base import AdminContext, AdminController, audited, documented
from gateway.api.admin_models import AdoptIn, AdoptOut, CandidateOut, shaped
from gateway.prompts import utc_now


def adoption_controller(ctx: AdminContext) -> type[AdminController]:
    """The /admin/adoption controller, bound to this app's store."""
    store = ctx.store

    class AdoptionController(AdminController):
        """Hard-coded system prompts captured on unmanaged calls, and their adoption."""

        path = "/admin/adoption"
        tags = ["adoption"]  # noqa: RUF012 (Litestar's Controller attribute)

        @get("/candidates", summary="Adoption candidates", responses=documented())
        async def candidates(self) -> list[CandidateOut]:
            """Captured system prompts grouped into templates, most called first (empty unless
            `adoption.capture` is on)."""
            return [
                shaped(candidate_to_dict(c, name), CandidateOut)
                for c, name in await list_adopted(store)
            ]

        @post("/adopt", summary="Adopt a candidate", responses=documented(404, 409, 413))
        async def adopt(
            self, request: Request[Any, Any, Any], data: JSONBody[AdoptIn]
        ) -> Response[AdoptOut]:
            """Create version 1.0.0 of a new prompt from the candidate, active and bound: from
            then on unmanaged calls whose system message matches it are served as that prompt.
            404 for an unknown candidate, 409 when the name exists or an adopted prompt already
            serves the candidate (naming it), 400 for a variable the
            template lacks or an ambiguous candidate; nothing is written then."""
            actor = audited(request, "adopt", f"{data.candidate} as {data.name}")
            result = await adopt_candidate(
                store,
                data.candidate,
                data.name,
                data.variables,
                actor=actor,
                clock=utc_now,
                new_id=lambda: uuid.uuid4().hex,
            )
            return Response(shaped(result, AdoptOut), status_code=201)

    return AdoptionController
