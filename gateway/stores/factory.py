"""Open the backend that a store URL names."""

from __future__ import annotations

from gateway.errors import ConfigError
from gateway.stores.base import Store


def open_store(url: str) -> Store:
    """`sqlite:///path.db` or `redis://host:port/db` (also `rediss://` and `unix://`)."""
    # Backends are imported on use: a gateway on SQLite never loads the Redis client (memory).
    if url.startswith("sqlite:///"):
        from gateway.stores.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from gateway.stores.redis import RedisStore

        return RedisStore(url)
    raise ConfigError(
        f"store_url {url.split('://')[0]!r}:// is not supported; "
        "use sqlite:///path/to/gateway.db or redis://host:port/db."
    )
