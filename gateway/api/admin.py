"""The admin API under /admin (PRODUCT §6.1): bearer tokens with roles, JSON in and out.

Every route is guarded by `auth.require_role`, which reads the role each route needs from
`auth.ROUTE_ROLES`. Handlers only call the use cases the command line calls too.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.params import FromPath

from gateway.api.auth import require_role
from gateway.experiments import experiment_results
from gateway.settings import ExperimentSettings
from gateway.stores.base import Store


def admin_controllers(store: Store, experiments: ExperimentSettings) -> list[type[Controller]]:
    """The /admin controllers, bound to this app's store and settings."""

    class ExperimentController(Controller):
        """Experiments: their results."""

        path = "/admin/experiments"
        guards = [require_role]  # noqa: RUF012 (Litestar's Controller attribute)
        tags = ["experiments"]  # noqa: RUF012

        @get("/{experiment_id:str}/results", summary="Results of an experiment (PRODUCT §11)")
        async def results(self, experiment_id: FromPath[str]) -> dict[str, Any]:
            """Per-arm users, requests, means and 95% intervals, the difference, the test's
            p-value, the sample-ratio check and the recommendation."""
            found = await experiment_results(store, experiment_id, experiments)
            return found.to_json()

    return [ExperimentController]
