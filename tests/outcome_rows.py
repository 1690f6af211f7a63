"""Writing `Exposure`s through a store: the stores take rows (`ExposureRow`), as the recorder
queues them; tests and tools describe exposures as `Exposure`s."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.outcomes import Exposure, Feedback, exposure_row
from gateway.stores.base import OutcomeStore, Recorded


async def record_outcomes(
    store: OutcomeStore, exposures: Sequence[Exposure], feedback: Sequence[Feedback]
) -> Recorded:
    """`store.record_outcomes` of the exposures' rows and the feedback."""
    return await store.record_outcomes([exposure_row(e) for e in exposures], feedback)
