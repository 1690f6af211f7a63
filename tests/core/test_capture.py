"""Adoption capture's pure part: fingerprints, merging, and which texts a body carries."""

from __future__ import annotations

from datetime import timedelta

from gateway.core.capture import (
    MAX_SHAPES,
    CallShape,
    fingerprint,
    keep_recent,
    merge,
    most_common_shape,
    sighting,
    system_texts,
)
from tests.factories import T0

SHAPE = CallShape("gpt-4o-mini", None, None)


def test_fingerprint_ignores_whitespace_runs() -> None:
    """Texts that differ only in runs of whitespace share a fingerprint; other texts do not."""
    assert fingerprint("You  help\n\tAcme. ") == fingerprint("You help Acme.")
    assert fingerprint("You help Acme.") != fingerprint("You help Acme!")


def test_merge_adds_counts_and_keeps_the_first_sample() -> None:
    """Merging adds counts and shapes, widens the time span and keeps the earlier sample."""
    early = sighting("system", "You help  Acme.", SHAPE, T0)
    late = sighting("developer", "You help Acme.", CallShape("o3", None, 5), T0 + timedelta(1), 3)
    merged = merge(late, early)
    assert (merged.count, merged.sample, merged.role) == (4, "You help  Acme.", "system")
    assert (merged.first_seen, merged.last_seen) == (T0, T0 + timedelta(1))
    assert merged.shapes == {SHAPE: 1, CallShape("o3", None, 5): 3}
    assert most_common_shape(merged.shapes) == CallShape("o3", None, 5)
    assert most_common_shape({}) == CallShape(None, None, None)


def test_shapes_stay_bounded() -> None:
    """Only the MAX_SHAPES most common shapes are kept."""
    merged = sighting("system", "x", SHAPE, T0, 100)
    for i in range(MAX_SHAPES + 5):
        merged = merge(merged, sighting("system", "x", CallShape(f"m{i}", None, None), T0))
    assert len(merged.shapes) == MAX_SHAPES
    assert merged.shapes[SHAPE] == 100


def test_keep_recent_keeps_the_newest() -> None:
    """The bound keeps the most recently seen, newest first."""
    prompts = [sighting("system", str(i), SHAPE, T0 + timedelta(minutes=i)) for i in range(5)]
    assert [p.sample for p in keep_recent(prompts, 2)] == ["4", "3"]


def test_system_texts_of_chat_and_responses() -> None:
    """Chat: system and developer messages (text parts joined); Responses: instructions first,
    then system/developer input items; images and other roles are skipped."""
    chat = {
        "messages": [
            {"role": "system", "content": "You help Acme."},
            {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"text": "brief."}]},
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "user", "content": "hi"},
            "junk",
        ]
    }
    assert system_texts(chat, "chat") == (("system", "You help Acme."), ("developer", "Be brief."))
    responses = {"instructions": "Be kind.", "input": [{"role": "system", "content": "Hi."}]}
    assert system_texts(responses, "responses") == (("system", "Be kind."), ("system", "Hi."))
    assert system_texts({"input": "hello"}, "responses") == ()
    assert system_texts({"messages": "nope"}, "chat") == ()
