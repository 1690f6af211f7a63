"""Token counting: tiktoken from the cache when it is there, a length estimate when not."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiktoken

from gateway.telemetry.tokens import EXACT_CHARS, TokenCounter, encoding_name


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


COUNT_OFFLINE = """
import os, socket
os.environ.pop("TIKTOKEN_CACHE_DIR", None)
os.environ.pop("DATA_GYM_CACHE_DIR", None)
def refuse(*args, **kwargs):
    raise OSError("no network in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from gateway.telemetry.tokens import TokenCounter
counter = TokenCounter(None)
counter.warm_up().join(60)
print(counter.count("gpt-4o", ["Hello world"]), counter.count("gpt-4", ["Hello world"]))
"""


def test_the_packaged_encodings_count_with_no_cache_and_no_network() -> None:
    """With TIKTOKEN_CACHE_DIR unset and every connection refused, tiktoken counts exactly."""
    environ = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", COUNT_OFFLINE],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["2", "2"], done.stderr


def test_an_empty_cache_folder_falls_back_to_the_packaged_encodings(tmp_path: Path) -> None:
    """A TIKTOKEN_CACHE_DIR without the files is passed over; nothing is written into it."""
    counter = TokenCounter(str(tmp_path))
    counter.warm_up().join(30)
    assert counter.count("gpt-4o", ["Hello world"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_counts_are_estimated_until_the_encodings_are_loaded() -> None:
    """Before warm-up finishes, a count is about four characters a token, never a failure."""
    assert TokenCounter(None).count("gpt-4o", ["x" * 40]) == 10


def test_a_megabyte_is_counted_in_bounded_time_at_the_measured_rate() -> None:
    """A 1 MB variable with a provider that reports no usage stalled the event loop for 0.6 s
    while tiktoken counted it: past EXACT_CHARS the count is extrapolated from the rate measured
    on the first characters, so it takes milliseconds and stays within a few percent."""
    counter = TokenCounter(None)
    counter.warm_up().join(60)
    sentence = "The quick brown fox jumps over the lazy dog near the riverbank. "
    text = sentence * (1_000_000 // len(sentence))
    exact = sum(counter.count("gpt-4o", [t]) for t in ("You are helpful.", "Summarise."))
    exact += len(tiktoken.get_encoding("o200k_base").encode_ordinary(text))
    started = time.perf_counter()
    counted = counter.count("gpt-4o", ["You are helpful.", text, "Summarise."])
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05, f"counting 1 MB took {elapsed * 1000:.1f} ms"
    assert abs(counted - exact) / exact < 0.05, (counted, exact)
    # Below the bound every character is counted exactly.
    small = ["Hello world"] * 10
    assert counter.count("gpt-4o", small) == 20
    assert EXACT_CHARS >= 1024
