"""Cost from the price table."""

from __future__ import annotations

import pytest

from gateway.core.pricing import Price, PriceTable

TABLE = PriceTable({"gpt-4o": Price(2.5, 10.0, 1.25), "gpt-4o-mini": Price(0.15, 0.6)})


def test_dated_snapshots_match_the_longest_prefix() -> None:
    """gpt-4o-mini-2024-07-18 is priced as gpt-4o-mini, not gpt-4o."""
    assert TABLE.find("gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert TABLE.find("gpt-4o-2024-08-06") == Price(2.5, 10.0, 1.25)
    assert TABLE.find("gpt-4omni") is None


def test_cost_uses_cached_input_price() -> None:
    """Cached input tokens cost the cached price; others the input price."""
    assert TABLE.cost("gpt-4o", 1_000_000, 0, 400_000) == pytest.approx(0.6 * 2.5 + 0.4 * 1.25)
    assert TABLE.cost("gpt-4o-mini", 1000, 1000, 500) == pytest.approx((1000 * 0.15 + 600) / 1e6)


def test_unknown_model_has_no_cost() -> None:
    """No price, no cost (None, not zero)."""
    assert TABLE.cost("llama-3", 10, 10) is None
