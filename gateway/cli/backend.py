"""The `Backend` Protocol: what commands ask of the registry, wherever it is.

Two implementations: `local.LocalBackend` opens the store (as the server does) and runs the use
cases itself; `remote.RemoteBackend` calls a gateway's admin API (PRODUCT §6.1). Both answer the
admin API's JSON shapes, which are also what `--json` prints, and raise the same `GatewayError`
classes with the same messages; commands render tables and JSON from these values only, so a
command prints the same whichever backend it used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway.core.model import Environment
from gateway.core.promptfile import PromptFile
from gateway.files import ExperimentSpec

Json = dict[str, Any]
"""A JSON object as the admin API answers it."""


class TestProgress(Protocol):
    """Where a test run reports progress (a progress bar for people)."""

    def start(self, label: str, total: int | None) -> None:
        """The run of `label` begins: `total` tests, or None when progress cannot be seen
        (a server runs them and answers at the end)."""

    def advance(self) -> None:
        """One more test finished."""


class Backend(Protocol):
    """The registry's operations, each answering the shape of its admin API route.

    Unknown prompts, versions and experiments raise the NotFound errors of `gateway.errors`
    naming the closest known ones; refusals raise what the use cases raise. Writes are audited
    (locally as `--actor`, remotely as the admin token's name).
    """

    async def close(self) -> None:
        """Release the store or the HTTP connections."""

    # ---- prompts -----------------------------------------------------------------------------

    async def push(self, files: Sequence[PromptFile]) -> list[Json]:
        """Create the versions the files describe: `[{name, version, status, file}]`.

        Refuses (VersionConflict naming the file) before writing anything when one would change
        a stored version. `file.source` is the file's path: a remote backend sends its contents.
        """

    async def prompts(self) -> list[Json]:
        """Every prompt by name: `[{name, versions, newest, newest_tested, active, experiment}]`."""

    async def prompt(self, name: str) -> Json:
        """`{name, active, versions: [...]}`, versions in creation order with every field."""

    async def version(self, name: str, version: str) -> Json:
        """One version with every field."""

    async def render(self, name: str, version: str, variables: Mapping[str, object]) -> Json:
        """`{name, version, messages: [{role, content}]}` with these variables."""

    async def resolve(self, name: str, env: Environment | None, user: str | None) -> Json:
        """`{name, version, number, variant, resolution, experiment}` that would serve `user`
        in `env` (None: the backend's environment) now."""

    async def test(
        self,
        name: str,
        version: str,
        file: PromptFile,
        *,
        concurrency: int,
        progress: TestProgress,
    ) -> Json:
        """Run `file`'s tests on the version now, store the pass rate, and answer
        `{name, version, threshold, is_tested, total, passed, failed, pass_rate, failures,
        ran_at}`."""

    async def diff(self, name: str, old: str, new: str) -> Json:
        """`{name, from, to, changed, diff}`: a unified diff of the two versions."""

    async def promote(self, name: str, version: str, *, force: bool) -> Json:
        """`{name, active, previous, changed, forced, audit}` (PromotionRefused under the gate)."""

    async def rollback(self, name: str) -> Json:
        """`{name, active, previous, changed, forced, audit}` (NothingToRollBack when none)."""

    # ---- experiments -------------------------------------------------------------------------

    async def create_experiment(self, spec: ExperimentSpec) -> Json:
        """The experiment with `result`: `created`, or `unchanged` when it exists as described."""

    async def experiments(self) -> list[Json]:
        """Every experiment with `running_now`, those running now first, then by start."""

    async def stop_experiment(self, experiment_id: str) -> Json:
        """The stopped experiment."""

    async def experiment_results(self, experiment_id: str) -> Json:
        """The results of PRODUCT §11."""

    async def conclude_experiment(self, experiment_id: str, *, force: bool) -> Json:
        """`{experiment, promoted, results}`: stopped, and the treatment promoted when the
        results recommend it (through the gate unless `force`)."""

    # ---- adoption ----------------------------------------------------------------------------

    async def candidates(self) -> list[Json]:
        """Adoption candidates, most called first (`GET /admin/adoption/candidates`)."""

    async def adopt(self, candidate: str, name: str, variables: Mapping[str, str]) -> Json:
        """`{name, candidate, version}`: version 1.0.0 of a new prompt from the candidate, active
        and bound. CandidateNotFound, VersionConflict (the name exists) or InvalidRequest (a
        variable the template lacks, an ambiguous candidate) write nothing."""

    # ---- audit -------------------------------------------------------------------------------

    async def audit(self, prompt: str | None, limit: int) -> list[Json]:
        """The newest `limit` audit entries (of one prompt when named), oldest first."""
