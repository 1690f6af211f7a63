"""What adoption capture keeps about the system prompts of unmanaged calls (PRODUCT §14).

For each distinct system or developer message (and Responses `instructions`) the gateway relays
on a call that names no managed prompt, it keeps one `CapturedPrompt`: a fingerprint (sha256 of
the text with whitespace runs collapsed to one space), a count, first and last seen, the call
shapes (model, temperature, max_tokens) with how often each was seen, and one sample text. The
sample is the only place message content is kept.

Pure: the recorder (`gateway/recording/capture.py`) passes the time in and does the I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.core.rendering import SYSTEM_ROLES

MAX_SHAPES = 16
"""Call shapes kept per captured prompt: the most common ones (a client may vary parameters)."""
MAX_SAMPLE_CHARS = 32_768
"""Longer texts are not captured: a candidate template is meant for a prompt, not a document."""


@dataclass(frozen=True, slots=True)
class CallShape:
    """The parameters a call was sent with, as adoption copies them into version 1.0.0."""

    model: str | None
    temperature: float | None
    max_tokens: int | None


@dataclass(frozen=True, slots=True)
class CapturedPrompt:
    """Everything kept about one distinct system prompt (or a batch's sightings of it)."""

    fingerprint: str
    """sha256 hex of the text with whitespace runs collapsed (`fingerprint()`)."""
    role: str
    """`system` or `developer` (Responses `instructions` count as `system`)."""
    sample: str
    """One text with this fingerprint, as first seen: the only message content kept."""
    count: int
    """Calls that carried it."""
    first_seen: datetime
    last_seen: datetime
    shapes: Mapping[CallShape, int]
    """How many calls had each shape (at most MAX_SHAPES, the most common)."""

    @property
    def models(self) -> dict[str, int]:
        """Calls per model (calls without a model are left out)."""
        return calls_per_model(self.shapes)


def calls_per_model(shapes: Mapping[CallShape, int]) -> dict[str, int]:
    """Calls per model of the call shapes counted (calls without a model are left out)."""
    found: dict[str, int] = {}
    for shape, count in shapes.items():
        if shape.model is not None:
            found[shape.model] = found.get(shape.model, 0) + count
    return found


def collapse_whitespace(text: str) -> str:
    """`text` with every whitespace run as one space and its ends trimmed: how captured texts
    are compared (str.split, about five times faster than a regular expression here)."""
    return " ".join(text.split())


def fingerprint(text: str) -> str:
    """sha256 hex of `collapse_whitespace(text)`."""
    return hashlib.sha256(collapse_whitespace(text).encode()).hexdigest()


def sighting(
    role: str, text: str, shape: CallShape, at: datetime, count: int = 1
) -> CapturedPrompt:
    """One call's (or `count` calls') sighting of a text, to be merged into what is stored."""
    return CapturedPrompt(fingerprint(text), role, text, count, at, at, {shape: count})


def merge(old: CapturedPrompt | None, new: CapturedPrompt) -> CapturedPrompt:
    """`old` and `new` (same fingerprint) as one: counts added, the earlier sample and role kept,
    the time span widened, shapes added up and cut to the MAX_SHAPES most common."""
    if old is None:
        return new
    shapes = dict(old.shapes)
    for shape, count in new.shapes.items():
        shapes[shape] = shapes.get(shape, 0) + count
    if len(shapes) > MAX_SHAPES:
        shapes = dict(sorted(shapes.items(), key=lambda kv: -kv[1])[:MAX_SHAPES])
    first = old if old.first_seen <= new.first_seen else new
    return CapturedPrompt(
        old.fingerprint,
        first.role,
        first.sample,
        old.count + new.count,
        min(old.first_seen, new.first_seen),
        max(old.last_seen, new.last_seen),
        shapes,
    )


def keep_recent(prompts: Iterable[CapturedPrompt], limit: int) -> list[CapturedPrompt]:
    """The `limit` most recently seen, newest first (the bound `adoption.max_candidates`)."""
    return sorted(prompts, key=lambda p: p.last_seen, reverse=True)[:limit]


def most_common_shape(shapes: Mapping[CallShape, int]) -> CallShape:
    """The shape seen most often (ties: the first listed); an empty mapping gives no parameters."""
    best: CallShape | None = None
    for shape, count in shapes.items():
        if best is None or count > shapes[best]:
            best = shape
    return best or CallShape(None, None, None)


def system_texts(body: Mapping[str, Any], operation: str) -> tuple[tuple[str, str], ...]:
    """The (role, text) of each system/developer message of a chat or Responses body.

    Chat: `messages` whose role is system or developer, with string content or text parts
    (joined). Responses: `instructions` (as `system`), then such items of `input`. Anything else
    (images, malformed values) is skipped: capture never refuses a call.
    """
    found: list[tuple[str, str]] = []
    if operation == "responses":
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            found.append(("system", instructions))
        items = body.get("input")
    else:
        items = body.get("messages")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("role") in SYSTEM_ROLES:
                text = _text(item.get("content"))
                if text:
                    found.append((item["role"], text))
    return tuple(found)


def without_system_text(body: Mapping[str, Any], operation: str, text: str) -> dict[str, Any]:
    """`body` without the one system/developer message (or Responses `instructions`) whose text
    is `text`, as `system_texts` reads it: the first such, the rest of the body untouched (an
    adopted prompt replaces only the message it was adopted from)."""
    out = dict(body)
    if operation == "responses" and out.get("instructions") == text:
        del out["instructions"]
        return out
    key = "input" if operation == "responses" else "messages"
    items = out.get(key)
    if isinstance(items, list):
        for at, item in enumerate(items):
            if (
                isinstance(item, dict)
                and item.get("role") in SYSTEM_ROLES
                and _text(item.get("content")) == text
            ):
                out[key] = items[:at] + items[at + 1 :]
                break
    return out


def _text(content: object) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: Sequence[object] = [p.get("text") for p in content if isinstance(p, dict)]
        if texts and all(isinstance(t, str) for t in texts):
            return "".join(str(t) for t in texts)
    return None
