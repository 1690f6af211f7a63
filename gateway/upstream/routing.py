"""Which provider serves a model: providers from config, routes by glob, first match wins."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.errors import ModelNotRouted

MOCK = "mock"

Origin = tuple[str, int, bool]
"""host, port, TLS: connections to one origin are interchangeable."""


@dataclass(frozen=True, slots=True)
class Provider:
    """An OpenAI-compatible endpoint; `base_url` is `mock` for the built-in mock provider."""

    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    """Sent as `Authorization: Bearer …`; when None the client's Authorization passes through."""
    stream_usage: bool = True
    """Ask for the usage chunk (`stream_options.include_usage`) on streams that did not; False
    for backends that refuse unknown fields (then tokens are counted with tiktoken)."""
    reasoning_models: tuple[str, ...] = ()
    """Globs of models that take reasoning-model parameters, beyond OpenAI's own (model_quirks)."""

    is_mock: bool = field(init=False, repr=False, compare=False)
    """The built-in mock provider."""
    address: str = field(init=False, repr=False, compare=False)
    """The host name, for spans and error messages (never the key); `mock` for the mock."""
    port: int | None = field(init=False, repr=False, compare=False)
    """The port, explicit or the scheme's default; None for the mock."""
    tls: bool = field(init=False, repr=False, compare=False)
    """An https:// provider."""
    authority: str = field(init=False, repr=False, compare=False)
    """`host[:port]` as the base URL writes it: the Host header sent to the provider."""
    path: str = field(init=False, repr=False, compare=False)
    """The base URL's path (`/v1`), which every request's path is appended to, byte for byte."""
    origin: Origin = field(init=False, repr=False, compare=False)
    """Providers of one origin share pooled connections."""
    label: str = field(init=False, repr=False, compare=False)
    """`Provider 'name' (host)`, how errors name it (never the key)."""

    def __post_init__(self) -> None:
        # Derived once: spans and logs read them on every call.
        mock = self.base_url == MOCK
        parts = urlsplit(self.base_url)
        object.__setattr__(self, "is_mock", mock)
        object.__setattr__(self, "address", MOCK if mock else parts.hostname or self.base_url)
        port = None if mock else parts.port or (443 if parts.scheme == "https" else 80)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "tls", parts.scheme == "https")
        object.__setattr__(self, "authority", parts.netloc)
        prefix = len(parts.scheme) + len("://") + len(parts.netloc)
        object.__setattr__(self, "path", "" if mock else self.base_url[prefix:])
        object.__setattr__(self, "origin", (self.address, port or 0, self.tls))
        object.__setattr__(self, "label", f"Provider {self.name!r} ({self.address})")


@dataclass(frozen=True, slots=True)
class Route:
    """Models matching `pattern` (a glob such as `gpt-*`) go to `provider`."""

    pattern: str
    provider: Provider


class Router:
    """Maps a model name to its provider; answers are memoized per model name."""

    def __init__(self, routes: Sequence[Route]) -> None:
        if not routes:
            raise ValueError("a router needs at least one route")
        self.routes = tuple(routes)
        self._compiled = [(re.compile(fnmatch.translate(r.pattern)), r.provider) for r in routes]
        self._memo: dict[str, Provider] = {}
        catch_all = [r.provider for r in routes if r.pattern == "*"]
        self.default = catch_all[0] if catch_all else routes[0].provider

    def provider_for(self, model: str | None) -> Provider:
        """The first route whose glob matches `model`; without a model, the default provider."""
        if model is None:
            return self.default
        found = self._memo.get(model)
        if found is not None:
            return found
        for pattern, provider in self._compiled:
            if pattern.match(model):
                if len(self._memo) < 4096:  # bounded: model names come from clients
                    self._memo[model] = provider
                return provider
        raise ModelNotRouted(
            f"No provider is configured for model {model!r}; add a route for it under routes: "
            "in the gateway config.",
            param="model",
        )
