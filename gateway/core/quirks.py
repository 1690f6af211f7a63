"""Model quirks: which models take reasoning-model parameters (PRODUCT §5, "parameter spelling").

OpenAI's reasoning models refuse `max_tokens` ("Use 'max_completion_tokens' instead") and any
`temperature` but the default. The gateway therefore sends a managed prompt's `max_tokens` as
`max_completion_tokens` to them and leaves its `temperature` out.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Sequence

REASONING_MODELS = ("o1*", "o3*", "o4*", "gpt-5*")
"""OpenAI's reasoning models, by default on every provider."""
NOT_REASONING_MODELS = ("gpt-5-chat*",)
"""Exceptions to REASONING_MODELS: `gpt-5-chat-latest` is GPT-5's non-reasoning chat model, which
OpenAI documents with `temperature`. A provider's `model_quirks.reasoning` can still name it."""


@functools.lru_cache(maxsize=64)
def _pattern(globs: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for a set of globs (case-sensitive, as model routes are)."""
    return re.compile("|".join(fnmatch.translate(g) for g in globs))


_DEFAULT = _pattern(REASONING_MODELS)
_EXCEPTIONS = _pattern(NOT_REASONING_MODELS)


def is_reasoning_model(model: str, extra_globs: Sequence[str] = ()) -> bool:
    """Whether `model` takes reasoning-model parameters.

    True for OpenAI's reasoning models (`o1*`, `o3*`, `o4*`, `gpt-5*`, except `gpt-5-chat*`) and for
    any model matching one of `extra_globs` (a provider's `model_quirks.reasoning`, which wins over
    the exception). Globs match the whole name, case-sensitively, like routes.
    """
    if _DEFAULT.match(model) and not _EXCEPTIONS.match(model):
        return True
    return bool(extra_globs) and _pattern(tuple(extra_globs)).match(model) is not None
