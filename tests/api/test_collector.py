"""What `gateway serve` does to the garbage collector once its startup is done."""

from __future__ import annotations

import gc

from gateway.api.app import YOUNG_THRESHOLD, _freeze_startup_objects


def test_startup_objects_are_frozen_and_the_young_generation_waits_longer() -> None:
    """Startup's objects leave the collector's passes; the youngest generation is collected at
    YOUNG_THRESHOLD tracked objects (the older generations keep their thresholds)."""
    before = gc.get_threshold()
    try:
        _freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert before[0] < YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
