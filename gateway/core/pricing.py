"""What a call cost: a price table per model, per million tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cached_input: float | None = None
    """Price of cached input tokens; None means they cost as much as other input."""


class PriceTable:
    """Looks a model up by exact name, else by the longest known prefix (dated snapshots)."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._memo: dict[str, Price | None] = {}

    def __len__(self) -> int:
        return len(self._prices)

    def find(self, model: str) -> Price | None:
        """`gpt-4o-mini-2024-07-18` finds `gpt-4o-mini`, not `gpt-4o`."""
        if model in self._memo:
            return self._memo[model]
        found = self._prices.get(model)
        if found is None:
            found = next(
                (self._prices[k] for k in self._by_length if model.startswith(k + "-")), None
            )
        if len(self._memo) < 4096:  # model names come from clients: bounded
            self._memo[model] = found
        return found

    def cost(
        self, model: str | None, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
    ) -> float | None:
        """The call's cost in US dollars, or None for a model without a price."""
        costs = self.costs(model, input_tokens, output_tokens, cached_input_tokens)
        return None if costs is None else costs[0] + costs[1]

    def costs(
        self, model: str | None, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
    ) -> tuple[float, float] | None:
        """(input, output) cost in US dollars, cached input at its own rate; None without a
        price."""
        price = self.find(model) if model else None
        if price is None:
            return None
        cached = min(cached_input_tokens, input_tokens)
        cached_rate = price.input if price.cached_input is None else price.cached_input
        prompt = (input_tokens - cached) * price.input + cached * cached_rate
        return prompt / 1_000_000, output_tokens * price.output / 1_000_000
