"""Experiment assignment: the bucket formula of PRODUCT §4, exactly."""

from __future__ import annotations

import hashlib
import random

import pytest

from gateway.core.experiments import assign_variant, bucket, in_treatment
from tests.factories import experiment


@pytest.mark.parametrize(
    ("user", "experiment_id", "expected"),
    [
        ("user-1", "exp-1", 1056),
        ("user-2", "exp-1", 514),
        ("alice", "support-agent-v2-test", 499),
        ("", "exp-1", 9618),
    ],
)
def test_bucket_matches_the_contract(user: str, experiment_id: str, expected: int) -> None:
    """The bucket is sha256 of "{user}-{experiment}", first 8 bytes big-endian, mod 10,000."""
    assert bucket(user, experiment_id) == expected


def test_bucket_is_the_formula_for_any_key() -> None:
    """The contract's formula, written out with hashlib, over 2,000 random keys (any Unicode)."""
    rng = random.Random(4)
    for _ in range(2_000):
        key = "".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randrange(0, 40)))
        key = key.encode("utf-8", "ignore").decode()  # no lone surrogates
        formula = int.from_bytes(hashlib.sha256(f"{key}-exp-9".encode()).digest()[:8], "big")
        assert bucket(key, "exp-9") == formula % 10000


def test_split_of_point_three_over_a_hundred_thousand_users() -> None:
    """A 0.3 split puts 29,842 of user-0..user-99999 in treatment: near 30%, and exactly so."""
    treated = sum(in_treatment(f"user-{i}", "exp-1", 0.3) for i in range(100_000))
    assert treated == 29_842


@pytest.mark.parametrize(("split", "expected"), [(0.0, False), (1.0, True)])
def test_extreme_splits_send_everyone_one_way(split: float, expected: bool) -> None:
    """Split 0 keeps everyone on control; split 1 sends everyone to treatment."""
    assert all(in_treatment(f"u{i}", "exp", split) is expected for i in range(500))


def test_same_user_always_gets_the_same_variant() -> None:
    """Assignment is a pure function of user and experiment."""
    exp = experiment(split=0.5)
    choices = {assign_variant(exp, "alice", f"req-{i}").variant for i in range(20)}
    assert len(choices) == 1


def test_user_key_assignment_is_marked_user() -> None:
    """With a user key the assignment is by user and serves that arm's version."""
    exp = experiment(id="exp-1", split=0.1)
    choice = assign_variant(exp, "user-1", "req-1")  # bucket 1056 >= 1000: control
    assert (choice.variant, choice.version, choice.assignment) == ("control", "1.0.0", "user")


def test_missing_user_key_falls_back_to_the_request_id() -> None:
    """Without a user key the request id is hashed and the assignment is marked random."""
    exp = experiment(id="exp-1", split=0.1)
    choice = assign_variant(exp, None, "user-2")  # bucket 514 < 1000: treatment
    assert (choice.variant, choice.version, choice.assignment) == ("treatment", "1.1.0", "random")
