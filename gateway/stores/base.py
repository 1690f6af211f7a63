"""The store contract that every backend passes (tests/stores/test_contract.py runs it on each)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from gateway.core.model import AuditEntry, Experiment, PromptState, RegistrySnapshot
from gateway.core.registry import Change

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


class Store(PromptReader, PromptWriter, Protocol):
    """A complete backend."""

    async def ping(self) -> None:
        """Return when the store answers; raise StoreUnavailable otherwise."""
        ...

    async def close(self) -> None:
        """Release connections. Closing twice is a no-op."""
        ...
