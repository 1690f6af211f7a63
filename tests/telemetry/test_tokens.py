"""Token counting: tiktoken from the cache when it is there, a length estimate when not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.telemetry.tokens import TokenCounter, encoding_name


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("o3", "o200k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        (None, "o200k_base"),
    ],
)
def test_encoding_by_model(model: str | None, encoding: str) -> None:
    """Current OpenAI models use o200k_base; gpt-4, 3.5 and embeddings cl100k_base."""
    assert encoding_name(model) == encoding


def test_counts_with_the_cached_encoding() -> None:
    """With the shipped cache the count is tiktoken's own."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    assert cache and Path(cache).is_dir(), "TIKTOKEN_CACHE_DIR must point at the shared cache"
    counter = TokenCounter(cache)
    counter.warm_up().join(30)
    assert counter.count("gpt-4o", ["Hello world"]) == 2


def test_missing_cache_estimates_and_never_downloads(tmp_path: Path) -> None:
    """Without the cache files nothing is fetched; counts fall back to about 4 chars a token."""
    counter = TokenCounter(str(tmp_path))
    counter.warm_up().join(5)
    assert counter.count("gpt-4o", ["x" * 40]) == 10
    assert list(tmp_path.iterdir()) == []
