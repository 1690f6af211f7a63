"""Checking a test's output against its expectations (the LLM judge and JSON Schema aside)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.core.promptfile import Expectation


@dataclass(frozen=True, slots=True)
class Miss:
    """One expectation that did not hold."""

    expectation: str
    detail: str


def check_text(expect: Expectation, output: str) -> list[Miss]:
    """contains, not_contains and regex; every one must hold."""
    misses = [Miss("contains", f"missing {s!r}") for s in expect.contains if s not in output]
    misses += [Miss("not_contains", f"found {s!r}") for s in expect.not_contains if s in output]
    misses += [
        Miss("regex", f"no match for {p!r}") for p in expect.regex if re.search(p, output) is None
    ]
    return misses


def judge_verdict(answer: str) -> tuple[bool | None, str]:
    """PASS or FAIL from the judge's first line, and its reason; None when it said neither."""
    text = answer.strip()
    first, _, rest = text.partition("\n")
    word = first.strip().strip("*#:. ").upper()
    reason = rest.strip() or first.strip()
    if word.startswith("PASS"):
        return True, reason
    if word.startswith("FAIL"):
        return False, reason
    return None, text[:200]
