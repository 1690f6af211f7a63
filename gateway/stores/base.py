"""The store contract that every backend passes (tests/stores/test_contract.py runs it on each)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.core.capture import CapturedPrompt
from gateway.core.model import AuditEntry, Experiment, PromptState, RegistrySnapshot
from gateway.core.outcomes import (
    ArmTotals,
    Exposure,
    ExposureRow,
    Feedback,
    PeriodTotal,
    UnitOutcome,
)
from gateway.core.registry import Change
from gateway.stores.backup import RegistryExport

Plan = Callable[[PromptState, frozenset[str]], Change]
"""A pure function from a prompt's state (and the experiment ids taken anywhere) to its change."""


class PromptReader(Protocol):
    """The read side that gateways serve from (through a snapshot cache, never per request)."""

    async def snapshot(self) -> RegistrySnapshot:
        """The whole registry now. An empty registry is a valid snapshot, never None."""
        ...

    def changes(self) -> AsyncIterator[None]:
        """Yield once at once, then whenever the store may have changed.

        The first yield lets a consumer (re)load after (re)subscribing, so nothing missed while
        disconnected is lost. Raises StoreUnavailable when the store stops answering.
        """
        ...


class PromptWriter(Protocol):
    """Admin writes: rare, atomic, audited."""

    async def apply(self, name: str, plan: Plan) -> Change:
        """Run `plan` on the current state of prompt `name` and write its change atomically.

        The state is read and the change written in one transaction: two processes applying plans
        to one prompt at once are serialized, so each plan sees the other's result. When `plan`
        raises, nothing is written. An empty change writes nothing, audit included.
        """
        ...

    async def prompt(self, name: str) -> PromptState:
        """The state of one prompt; a name never created gives a state with no versions."""
        ...

    async def find_experiment(self, experiment_id: str) -> Experiment | None:
        """The experiment with this id, on whatever prompt, or None."""
        ...

    async def audit(self, *, prompt_name: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` audit entries (of one prompt when named), oldest first."""
        ...

    async def last_changes(self) -> dict[str, AuditEntry]:
        """The newest audit entry of each prompt that has one, by prompt name.

        One read whatever the number of prompts (the console's Prompts page shows them all);
        costs time in prompts, not in audit entries.
        """
        ...


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one `record_outcomes` batch changed."""

    exposures: int
    """Exposures written (a request id already stored is not counted again)."""
    feedback: int
    """Feedback values applied (new, or replacing an earlier value of the same metric; a value
    taken before the one stored is not)."""
    orphans: int
    """Feedback values ignored: no exposure is stored for their request id."""


class OutcomeStore(Protocol):
    """Experiment exposures, feedback and per-unit aggregates (PRODUCT §11).

    Written in batches by each gateway's recorder, off the request path; with a shared store,
    every replica's batches land in the same aggregates.
    """

    async def record_outcomes(
        self, exposures: Sequence[ExposureRow], feedback: Sequence[Feedback]
    ) -> Recorded:
        """Write one batch: the exposures (as rows: `exposure_row`) first, then the feedback,
        atomically.

        Each request id is recorded once: an exposure whose request id is already stored (or
        came earlier in the batch) is ignored, so a batch retried after an error counts nothing
        twice. A feedback value replaces the value of the same (request id, metric) taken
        before it (`Feedback.at`; of equal times the one written last), and the unit's aggregate
        moves by the difference; a value taken before the stored one is ignored, so of two
        posts to two gateways the later stays whichever batch is written last. Feedback for a
        request id with no stored exposure is ignored (counted in `orphans`). Raises
        StoreUnavailable when the store does not answer, and ValueError when a latency, cost or
        value is NaN or infinite; either way nothing of the batch was written.
        """
        ...

    async def exposure(self, request_id: str) -> Exposure | None:
        """The exposure recorded for this request id, or None."""
        ...

    async def unit_outcomes(self, experiment_id: str, metric: str) -> list[UnitOutcome]:
        """Every exposed unit of the experiment with its aggregate of `metric` (PRODUCT §11).

        `latency`: the sum of latency_ms over the unit's exposures, count = exposures.
        `cost_per_task`: the sum of cost_usd over exposures with a cost, count = those.
        `user_satisfaction`, `task_completion`: the sum of the unit's feedback values (one per
        request), count = how many. A unit without a value has count 0 and is still listed
        (it counts for the sample-ratio check). Units come in no particular order; an experiment
        never exposed has none. Costs time in units, not in exposures. Raises ValueError for any
        other metric.
        """
        ...

    async def arm_totals(self, experiment_id: str, metric: str) -> tuple[ArmTotals, ArmTotals]:
        """The control and treatment arms' sums of `metric` over their units, as results need
        them (PRODUCT §11), computed by the store where the units are.

        The same as `core.stats.arm_totals(await self.unit_outcomes(experiment_id, metric))`
        but for the order in which floating-point sums add up (equal to about 1e-12 relative):
        the mean of the units' means first, then the squared deviations from it, read in one
        snapshot of the store. An arm with no unit is `NO_UNITS`. Costs the store time in units;
        the caller nothing per unit. Raises ValueError for a metric `unit_outcomes` refuses.
        """
        ...

    async def period_totals(self, experiment_id: str, metric: str) -> list[PeriodTotal]:
        """The experiment's exposures and `metric`'s values per hour and arm (PRODUCT §6.3's
        difference over time), in no particular order; hours and arms without exposures are
        absent.

        The hour is the exposure's (`at`, UTC); a feedback value counts in the hour of the call
        it is about, and a replaced value moves the sums by the difference, as in the unit
        aggregates. Kept by `record_outcomes` in the same batch, so it costs time in hours, not
        in exposures. Exposures recorded before a store kept these totals are not in them.
        Raises ValueError for a metric `unit_outcomes` refuses.
        """
        ...


class CaptureStore(Protocol):
    """System prompts captured on unmanaged calls for adoption (PRODUCT §14).

    Written in batches by each gateway's capture recorder, off the request path, only when
    `adoption.capture` is on; with a shared store, every replica's sightings add up.
    """

    async def record_captures(self, batch: Sequence[CapturedPrompt], *, limit: int) -> None:
        """Merge a batch into the stored captured prompts (`core.capture.merge`, by fingerprint),
        then keep only the `limit` most recently seen (the least recently seen are deleted).

        Atomic per batch; two writers merging the same fingerprint both count. Raises
        StoreUnavailable when the store does not answer (nothing of the batch written).
        """
        ...

    async def captured(self) -> list[CapturedPrompt]:
        """Every captured prompt, most recently seen first."""
        ...


class RegistryBackup(Protocol):
    """The whole registry out and back in (`gateway store export` / `restore`, PRODUCT §15)."""

    @property
    def location(self) -> str:
        """Where the store is, without secrets (`sqlite:///abs/path.db`, `redis://host:port/db
        prefix pg:`): a snapshot file read from one store is never served for another."""
        ...

    async def export(self) -> RegistryExport:
        """Every prompt (versions, activation, experiments) and every audit entry, oldest first,
        read in one transaction, with the store's revision. Experiment outcomes are not read."""
        ...

    async def restore(self, backup: RegistryExport) -> None:
        """Write `backup` into this store in one transaction, audit order kept.

        The store must hold no registry data (no prompt, experiment or audit entry; experiment
        outcomes do not count): otherwise StoreNotEmpty, and nothing is written. The revision
        becomes the backup's plus one, so gateways that served the exported registry take the
        restored one as newer, and every change is announced as any write's is.
        """
        ...


class Store(PromptReader, PromptWriter, OutcomeStore, CaptureStore, RegistryBackup, Protocol):
    """A complete backend."""

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""
        ...

    async def close(self) -> None:
        """Release connections. Closing twice is a no-op."""
        ...
