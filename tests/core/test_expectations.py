"""Test expectations on an output, and reading the judge's verdict."""

from __future__ import annotations

import pytest

from gateway.core.expectations import check_text, judge_verdict
from gateway.core.promptfile import Expectation


def test_every_text_expectation_must_hold() -> None:
    """contains, not_contains and regex each report what failed."""
    expect = Expectation(
        contains=("Acme", "hours"), not_contains=("As an AI",), regex=("(?i)^hello",)
    )
    assert check_text(expect, "Hello from Acme, open hours 9-5") == []
    misses = check_text(expect, "As an AI at Acme I cannot")
    assert [(m.expectation, m.detail) for m in misses] == [
        ("contains", "missing 'hours'"),
        ("not_contains", "found 'As an AI'"),
        ("regex", "no match for '(?i)^hello'"),
    ]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("PASS\nPolite.", True),
        ("**FAIL** - rude", False),
        ("pass: fine", True),
        ("I think it is fine", None),
    ],
)
def test_judge_verdict(answer: str, verdict: bool | None) -> None:
    """The first word of the first line decides; anything else is no verdict."""
    assert judge_verdict(answer)[0] is verdict
