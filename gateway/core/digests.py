"""SHA-256 (FIPS 180-4) for the per-call hashes: experiment buckets and user key hashes.

CPython ships two implementations of the same function: `hashlib.sha256`, which goes through
OpenSSL's EVP layer (a context allocated, looked up and cleansed per hash), and its own built-in
one (`_sha2`, HACL*, since 3.12; `_sha256` before). For the short inputs hashed on the request
path the built-in one is faster, and much more so in a busy server where OpenSSL's code and
locks are cold between calls: an experiment's bucket took 6.2 -> 3.7 µs of CPU per call in the
running gateway (benchmarks/README.md). The digests are the same bytes; `hashlib`'s is the
fallback on an interpreter without the built-in module.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from typing import Protocol, cast


class Hash(Protocol):
    """The part of a hash object the callers use."""

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


def _builtin() -> Callable[[bytes], Hash]:
    for module in ("_sha2", "_sha256"):
        try:
            return cast(Callable[[bytes], Hash], importlib.import_module(module).sha256)
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


sha256: Callable[[bytes], Hash] = _builtin()
"""`sha256(data)`: a hash object of `data` with `digest()` (32 bytes) and `hexdigest()`."""
