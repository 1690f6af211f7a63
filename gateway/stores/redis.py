"""The shared store: Redis, for many gateway replicas; changes are announced by pub/sub.

Layout (every key under one prefix, `pg:` by default):

    {p}names                set of prompt names
    {p}versions:{name}      hash version -> version document
    {p}activation:{name}    the active version and those active before it
    {p}experiments          hash experiment id -> experiment document
    {p}audit                list of audit documents, oldest first
    {p}audit:{name}         the same, for one prompt
    {p}revision             counter bumped by every write
    {p}changes              pub/sub channel, published on every write
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from gateway.core.model import AuditEntry, Experiment, PromptState, RegistrySnapshot
from gateway.core.registry import Change
from gateway.errors import StoreUnavailable
from gateway.stores import codec
from gateway.stores.base import Plan


def redact(url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore:
    """A Store on Redis. Writes are WATCH/MULTI transactions, retried when another writer wins."""

    def __init__(self, url: str, *, prefix: str = "pg:", poll_interval: float = 0.5) -> None:
        self.url = url
        self.prefix = prefix
        self.poll_interval = poll_interval
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5
        )

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            if isinstance(exc, WatchError):
                raise
            raise StoreUnavailable(
                f"Redis store at {redact(self.url)} did not answer: {exc}. "
                "Check GATEWAY_STORE_URL and that redis-server is running."
            ) from exc

    async def ping(self) -> None:
        with self._translate():
            await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()

    async def snapshot(self) -> RegistrySnapshot:
        with self._translate():
            members = await self._client.smembers(self._k("names"))
            names = sorted(_text(n) for n in members)
            async with self._client.pipeline(transaction=True) as pipe:
                for name in names:
                    pipe.hvals(self._k("versions", name))
                    pipe.get(self._k("activation", name))
                pipe.hvals(self._k("experiments"))
                pipe.get(self._k("revision"))
                replies = await pipe.execute()
        *per_prompt, experiment_docs, revision = replies
        experiments = _by_prompt(experiment_docs)
        prompts = {
            name: codec.load_state(
                name, per_prompt[2 * i], per_prompt[2 * i + 1], experiments.get(name, [])
            )
            for i, name in enumerate(names)
        }
        return RegistrySnapshot(prompts, _text(revision or b"0"))

    async def prompt(self, name: str) -> PromptState:
        with self._translate():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hvals(self._k("versions", name))
                pipe.get(self._k("activation", name))
                pipe.hvals(self._k("experiments"))
                docs, activation, experiment_docs = await pipe.execute()
        return codec.load_state(name, docs, activation, _by_prompt(experiment_docs).get(name, []))

    async def apply(self, name: str, plan: Plan) -> Change:
        versions_key = self._k("versions", name)
        activation_key = self._k("activation", name)
        experiments_key = self._k("experiments")
        with self._translate():
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(versions_key, activation_key, experiments_key)
                        docs = await pipe.hvals(versions_key)
                        activation = await pipe.get(activation_key)
                        all_experiments = await pipe.hgetall(experiments_key)
                        ours = _by_prompt(list(all_experiments.values())).get(name, [])
                        state = codec.load_state(name, docs, activation, ours)
                        taken = frozenset(_text(k) for k in all_experiments)
                        change = plan(state, taken)
                        if change.is_empty:
                            await pipe.unwatch()
                            return change
                        pipe.multi()
                        self._write(pipe, name, change)
                        await pipe.execute()
                        return change
                    except WatchError:
                        # Another writer changed this prompt between our read and write: plan
                        # again on the new state, as SQLite's IMMEDIATE lock would have ordered it.
                        continue

    def _write(self, pipe: aioredis.client.Pipeline, name: str, change: Change) -> None:
        pipe.sadd(self._k("names"), name)
        if change.versions:
            pipe.hset(
                self._k("versions", name),
                mapping={v.version: codec.dump_version(v) for v in change.versions},
            )
        if change.activation_changed:
            pipe.set(
                self._k("activation", name), codec.dump_activation(change.active, change.history)
            )
        if change.experiments:
            pipe.hset(
                self._k("experiments"),
                mapping={e.id: codec.dump_experiment(e) for e in change.experiments},
            )
        if change.audit:
            docs = [codec.dump_audit(e) for e in change.audit]
            pipe.rpush(self._k("audit"), *docs)
            pipe.rpush(self._k("audit", name), *docs)
        pipe.incr(self._k("revision"))
        pipe.publish(self._k("changes"), name)

    async def find_experiment(self, experiment_id: str) -> Experiment | None:
        with self._translate():
            doc = await self._client.hget(self._k("experiments"), experiment_id)
        return codec.load_experiment(doc) if doc else None

    async def audit(self, *, prompt_name: str | None = None, limit: int = 100) -> list[AuditEntry]:
        key = self._k("audit") if prompt_name is None else self._k("audit", prompt_name)
        with self._translate():
            docs = await self._client.lrange(key, -limit, -1)
        return [codec.load_audit(d) for d in docs]

    async def changes(self) -> AsyncIterator[None]:
        # Pub/sub makes a change visible at once; comparing the revision counter on every quiet
        # interval catches a message lost while the subscription was being re-established.
        with self._translate():
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._k("changes"))
                last = await self._client.get(self._k("revision"))
                yield None
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.poll_interval
                    )
                    current = await self._client.get(self._k("revision"))
                    if message is not None or current != last:
                        last = current
                        yield None
            finally:
                await pubsub.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _by_prompt(docs: list[bytes | str]) -> dict[str, list[Experiment]]:
    """Decode experiment documents and group them by prompt."""
    grouped: dict[str, list[Experiment]] = {}
    for doc in docs:
        experiment = codec.load_experiment(doc)
        grouped.setdefault(experiment.prompt_name, []).append(experiment)
    return grouped
