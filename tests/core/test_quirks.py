"""Which models take reasoning-model parameters: OpenAI's by default, more by model_quirks."""

from __future__ import annotations

import pytest

from gateway.core.quirks import is_reasoning_model


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("o1", True),
        ("o1-mini", True),
        ("o3-mini", True),
        ("o3-2025-04-16", True),
        ("o4-mini", True),
        ("gpt-5", True),
        ("gpt-5-mini", True),
        ("gpt-5-nano-2025-08-07", True),
        ("gpt-5.1", True),
        ("gpt-5-chat-latest", False),
        ("gpt-4o-mini", False),
        ("gpt-4.1", False),
        ("openai/o3-mini", False),
        ("O3-MINI", False),
        ("mistral-large", False),
    ],
)
def test_openai_reasoning_models_by_default(model: str, expected: bool) -> None:
    """o1*, o3*, o4* and gpt-5* (but not GPT-5's non-reasoning gpt-5-chat*) are reasoning models."""
    assert is_reasoning_model(model) is expected


@pytest.mark.parametrize(
    ("model", "globs", "expected"),
    [
        ("my-o3-deployment", ("my-o3-*",), True),
        ("openai/o3-mini", ("openai/o*",), True),
        ("gpt-5-chat-latest", ("gpt-5-chat*",), True),
        ("gpt-4o", ("my-o3-*",), False),
    ],
)
def test_a_providers_model_quirks_add_globs(
    model: str, globs: tuple[str, ...], expected: bool
) -> None:
    """A provider's model_quirks.reasoning globs add models, even over the gpt-5-chat exception."""
    assert is_reasoning_model(model, globs) is expected
