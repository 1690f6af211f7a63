"""Token estimates for providers that report no usage: tiktoken when its encoding is loaded.

An encoding is loaded in a background thread the first time a count needs it, never on the request
path (loading reads a file of several MB), and only then: the two take about 120 MB of memory, and
most providers report usage, so most gateways never load one. They ship with the package
(`encodings/`, sha256-checked by tiktoken), so counting needs no network and no folder outside
the package; a `TIKTOKEN_CACHE_DIR` that holds them is used first. Until an encoding is ready, or
when it cannot be had at all, the count falls back to about four characters a token. A count is
bounded: tiktoken reads the first EXACT_CHARS characters and the rest is extrapolated at the rate
measured on them, so a megabyte variable costs milliseconds, not a stalled event loop. Either way
the span says gateway.usage.estimated = true; a request never fails over this.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("gateway.tokens")
# tiktoken's cache file names (sha1 of each encoding's download URL). Only cached files are
# loaded: the gateway never downloads at run time.
PACKAGED = Path(__file__).resolve().parent / "encodings"
"""The encodings shipped with the package, named as tiktoken's cache names them."""
CACHE_KEYS = {
    "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
    "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
}
EXACT_CHARS = 4096
"""Characters of a call's texts counted by tiktoken; past them, counted at the rate measured."""
_CL100K_MODELS = ("gpt-4", "gpt-3.5", "text-embedding-")


def encoding_name(model: str | None) -> str:
    """o200k_base for current OpenAI models (gpt-4o, 4.1, o-series, 5), cl100k_base for older."""
    if model and model.startswith(_CL100K_MODELS) and not model.startswith(("gpt-4o", "gpt-4.1")):
        return "cl100k_base"
    return "o200k_base"


class TokenCounter:
    """Counts tokens with tiktoken once its encodings are loaded, else estimates by length."""

    def __init__(self, cache_dir: str | None = None) -> None:
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._encodings: dict[str, Any] = {}
        self._asked: set[str] = set()

    def warm_up(self, *names: str) -> threading.Thread:
        """Load encodings (default: all) in a daemon thread; failures are logged and tolerated."""
        chosen = names or tuple(CACHE_KEYS)
        self._asked.update(chosen)
        thread = threading.Thread(
            target=self._load, args=(chosen,), name="tiktoken-load", daemon=True
        )
        thread.start()
        return thread

    def _load(self, names: Iterable[str]) -> None:
        try:
            import tiktoken
        except ImportError:  # pragma: no cover - a dependency, but never fatal
            log.warning("tiktoken is not installed; token counts will be estimated by length")
            return
        for name in names:
            key = CACHE_KEYS[name]
            folder = self._cache_dir
            if folder is None or not (folder / key).is_file():
                folder = PACKAGED
            if not (folder / key).is_file():
                log.warning(
                    "tiktoken encoding %s is missing from %s; token estimates will use text length",
                    name,
                    PACKAGED,
                )
                continue
            # tiktoken finds its files through this variable (its documented cache setting);
            # pointing it at a folder that holds them means nothing is ever downloaded.
            os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
            try:
                self._encodings[name] = tiktoken.get_encoding(name)
            except Exception as exc:
                log.warning(
                    "tiktoken encoding %s unavailable (%s); estimating by length",
                    name,
                    type(exc).__name__,
                )

    def count(self, model: str | None, texts: Iterable[str]) -> int:
        """Tokens in the texts for the model's encoding (about len/4 until it is loaded; the
        first such count starts loading it).

        Bounded: tiktoken reads the first EXACT_CHARS characters (about 1.5 ms at worst, CJK
        text); the rest is counted at the characters-per-token rate measured on them. Counting
        runs on the event loop, so an exact count of a 1 MB variable (0.1-0.6 s) would stall
        every call the process serves.
        """
        name = encoding_name(model)
        encoding = self._encodings.get(name)
        if encoding is None:
            if name not in self._asked:
                self.warm_up(name)
            return sum((len(t) + 3) // 4 for t in texts)
        tokens = read = rest = 0
        for text in texts:
            budget = EXACT_CHARS - read
            if budget <= 0:
                rest += len(text)
                continue
            piece = text if len(text) <= budget else text[:budget]
            tokens += len(encoding.encode_ordinary(piece))
            read += len(piece)
            rest += len(text) - len(piece)
        if rest:
            tokens += round(rest * tokens / read) if tokens else (rest + 3) // 4
        return tokens
