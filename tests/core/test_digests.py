"""The per-call SHA-256 is hashlib's, byte for byte, whichever implementation serves it."""

from __future__ import annotations

import hashlib
import random

from gateway.core.digests import sha256


def test_the_digests_are_hashlibs() -> None:
    """Empty, short, block-sized and long inputs, and 1,000 random ones up to 300 bytes."""
    rng = random.Random(3)
    inputs = [b"", b"abc", b"x" * 55, b"x" * 56, b"x" * 64, b"y" * 1_000_000]
    inputs += [rng.randbytes(rng.randrange(300)) for _ in range(1_000)]
    for data in inputs:
        assert sha256(data).digest() == hashlib.sha256(data).digest()
        assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
