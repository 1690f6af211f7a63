"""The shared store: Redis, for many gateway replicas; changes are announced by pub/sub.

Layout (every key under one prefix, `pg:` by default):

    {p}names                set of prompt names
    {p}versions:{name}      hash version -> version document
    {p}activation:{name}    the active version and those active before it
    {p}adoption:{name}      the prompt's adoption binding, when it was adopted (PRODUCT §14)
    {p}experiments          hash experiment id -> experiment document
    {p}audit                list of audit documents, oldest first
    {p}audit:{name}         the same, for one prompt
    {p}revision             counter bumped by every write
    {p}lineage              random id set by the first write (anew by a restore): the store's life
    {p}changes              pub/sub channel, published on every write

System prompts captured for adoption (not registry data: no revision bump, no announcement):

    {p}captured             hash fingerprint -> captured prompt document (codec)
    {p}captured-seen        sorted set fingerprint -> last seen (Unix seconds), for the bound

Experiment outcomes (PRODUCT §11), written by every replica into the same keys:

    {p}exposures                           hash request id -> exposure document (codec)
    {p}feedback                            hash "{metric}:{request id}" -> "{latest value} {taken
                                           at, µs}" (written before times were kept: the value)
    {p}unit-totals:{experiment}            hash "{variant}:{unit}" -> the unit's aggregate
    {p}periods:{experiment}                hash "{hour}|{variant}|{metric}|{n, s or q}" -> the
                                           hour's count, sum or sum of squares of the metric
                                           (`latency`'s count is the hour's requests)

A unit's aggregate is one string: the space-separated numbers "requests latency_total cost_total
cost_count", then " metric total count" for each feedback metric the unit has a value of, then "|"
and the field again, e.g. "3 1204.5 0.0042 2 task_completion 1 2|control:9f86d081884c7d65". With
every metric of a unit in one value, `unit_outcomes` is one read whatever the metric; with the
field repeated, that read is HVALS, half the elements of HGETALL (the first "|" ends the numbers,
whatever the unit holds). Sums are written with 17 significant digits, so they read back as the
very doubles Lua added.

`record_outcomes` is one Lua script (RECORD): exposures first (HSETNX on the request id, then the
unit's aggregate), then feedback (replace the value, move the aggregate by the difference). A script
runs alone on the server, so replicas' batches never interleave, and it cannot stop halfway: Python
checks the batch and sends it as JSON, which the script decodes before it writes anything. The
script builds the unit-totals keys from the prefix, as feedback names its experiment only through
the stored exposure; like the registry's MULTI writes, this assumes one Redis server, not a Cluster.
The period sums of a batch are added up in the script and written once per hour, arm and metric
(the count by HINCRBY, the sums read, added to and written with 17 significant digits).
`unit_outcomes` is one script too (READ_UNITS), which holds the server
about 0.15 s per 100,000 units while it encodes them.

`arm_totals` reads the units as `unit_outcomes` does and sums them in Python, in a worker thread
(`core.stats.arm_totals`), not in a script: a Lua script that parsed and summed 100,000 values
held the server 0.45 s, three times as long as READ_UNITS, and every replica's writes wait while
a script runs.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from gateway.core.capture import CapturedPrompt, merge
from gateway.core.model import AuditEntry, Experiment, PromptState, RegistrySnapshot
from gateway.core.outcomes import (
    PERIOD_CHARS,
    ArmTotals,
    Exposure,
    ExposureRow,
    Feedback,
    PeriodTotal,
    UnitOutcome,
    Variant,
)
from gateway.core.redaction import redact
from gateway.core.registry import Change
from gateway.core.stats import arm_totals
from gateway.errors import StoreNotEmpty, StoreUnavailable
from gateway.stores import codec
from gateway.stores.backup import RegistryExport
from gateway.stores.base import Plan, Recorded

# KEYS: the exposures and feedback hashes. ARGV: the unit-totals key prefix, the exposures as a
# JSON array of their rows (`ExposureRow`: Exposure's fields in order, `at` in microseconds), the
# feedback as a JSON array of [request id, metric, value, taken at], the periods key prefix,
# PERIOD_CHARS.
# Returns {written, applied, orphans}.
# The script writes each exposure's document (codec.load_exposure's array: the fields without
# the request id), so the gateway's Python makes no text per exposure: one JSON array per batch.
# Numbers are written with 17 significant digits (cjson.encode keeps 14), so they read back as
# the doubles sent, and counts as integers (exact up to 2^53: cjson decodes every number to a
# double; token counts are at most 2^32 - 1); JSON text is written by cjson.encode.
RECORD = """
local exposures, feedback, units, periods = KEYS[1], KEYS[2], ARGV[1], ARGV[4]
local calls, votes, period_chars = cjson.decode(ARGV[2]), cjson.decode(ARGV[3]), tonumber(ARGV[5])
local null, text = cjson.null, cjson.encode

-- a // b and a % b of integers, exact: a / b rounds (7.2e15 / 1e6 can round up to the next
-- integer), so the remainder is corrected into [0, b).
local function divmod(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then return q - 1, r + b end
  if r >= b then return q + 1, r - b end
  return q, r
end

-- An exposure's time (microseconds since the epoch: exact, the gateway takes 1900-2199 only)
-- as codec.utc_text writes it: ISO 8601 in UTC, microseconds when not zero, "+00:00". The date
-- from the day number by Howard Hinnant's civil_from_days ("chrono-Compatible Low-Level Date
-- Algorithms"); a batch's calls fall within a few seconds, so each second's text is made once.
local seconds = {}
local function utc_text(at)
  local second, micro = divmod(at, 1000000)
  local whole = seconds[second]
  if not whole then
    local days, rest = divmod(second, 86400)
    local era, doe = divmod(days + 719468, 146097)
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
      - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local day = doy - math.floor((153 * mp + 2) / 5) + 1
    local month = mp < 10 and mp + 3 or mp - 9
    local year = yoe + era * 400 + (month <= 2 and 1 or 0)
    local hour, left = divmod(rest, 3600)
    local minute, sec = divmod(left, 60)
    whole = string.format('%04d-%02d-%02dT%02d:%02d:%02d', year, month, day, hour, minute, sec)
    seconds[second] = whole
  end
  if micro == 0 then return whole .. '+00:00' end
  return string.format('%s.%06d+00:00', whole, micro)
end

local function number(x)
  if x == null then return 'null' end
  return string.format('%.17g', x)
end

-- A count (tokens, status) as an integer: %.17g writes 10^17 as 1e+17, which reads as a float.
local function integer(x)
  if x == null or x >= 2^63 or x <= -2^63 then return number(x) end
  return string.format('%d', x)
end

-- The batch's period sums, added up here and written once per field at the end.
local moved = {}
local function move(experiment, field, count, total, squares)
  local key = periods .. experiment
  local sums = moved[key]
  if not sums then sums = {}; moved[key] = sums end
  local s = sums[field]
  if not s then s = {0, 0, 0}; sums[field] = s end
  s[1], s[2], s[3] = s[1] + count, s[2] + total, s[3] + squares
end

-- A period's sum moved by `value`, kept with 17 significant digits: HINCRBYFLOAT keeps 17
-- decimals, so the squares of small costs (1e-14) kept 3 or 4 digits, and 1e-300 none.
local function add(key, field, value)
  local before = tonumber(redis.call('HGET', key, field) or '0')
  redis.call('HSET', key, field, string.format('%.17g', before + value))
end

-- A unit's aggregate: its four exposure sums, and its feedback sums as stored (up to the "|").
local function split(raw)
  if not raw then return 0, 0, 0, 0, '' end
  local requests, latency, cost, costs, rest =
    string.match(raw, '^([^ |]+) ([^ |]+) ([^ |]+) ([^ |]+)([^|]*)|')
  return tonumber(requests), tonumber(latency), tonumber(cost), tonumber(costs), rest
end

local function save(key, field, requests, latency, cost, costs, rest)
  local sums = string.format('%d %.17g %.17g %d', requests, latency, cost, costs)
  redis.call('HSET', key, field, sums .. rest .. '|' .. field)
end

local written, applied, orphans = 0, 0, 0
for _, e in ipairs(calls) do
  -- e: request id, experiment, variant, version, unit, at (microseconds), latency, input
  -- tokens, output tokens, cost or null, status, trace id or null
  local experiment, variant, at, cost, spent = e[2], e[3], utc_text(e[6]), e[10], e[7]
  local doc = '[' .. text(experiment) .. ',' .. text(variant) .. ',' .. text(e[4]) .. ','
    .. text(e[5]) .. ',' .. text(at) .. ',' .. number(spent) .. ',' .. integer(e[8]) .. ','
    .. integer(e[9]) .. ',' .. number(cost) .. ',' .. integer(e[11]) .. ',' .. text(e[12]) .. ']'
  if redis.call('HSETNX', exposures, e[1], doc) == 1 then
    written = written + 1
    local key, field = units .. experiment, variant .. ':' .. e[5]
    local hour = string.sub(at, 1, period_chars) .. '|' .. variant
    local requests, latency, total, costs, rest = split(redis.call('HGET', key, field))
    if cost ~= null then
      total, costs = total + cost, costs + 1
      move(experiment, hour .. '|cost_per_task', 1, cost, cost * cost)
    end
    save(key, field, requests + 1, latency + spent, total, costs, rest)
    move(experiment, hour .. '|latency', 1, spent, spent * spent)
  end
end

for _, vote in ipairs(votes) do
  local request_id, metric, value, taken = vote[1], vote[2], vote[3], vote[4]
  local doc = redis.call('HGET', exposures, request_id)
  -- The value stored for this metric and when it was taken ("value at"; a value written before
  -- times were kept has none: 0). A value taken before it (another gateway's batch came first)
  -- is not applied.
  local stored = redis.call('HGET', feedback, metric .. ':' .. request_id)
  local previous, when
  if stored then
    local text, at = string.match(stored, '^(%S+) ?(%S*)$')
    previous, when = tonumber(text), tonumber(at) or 0
  end
  if not doc then
    orphans = orphans + 1
  elseif not stored or taken >= when then
    applied = applied + 1
    local exposure = cjson.decode(doc)
    local key, field = units .. exposure[1], exposure[2] .. ':' .. exposure[4]
    local hour = string.sub(exposure[5], 1, 13) .. '|' .. exposure[2] .. '|' .. metric
    if previous then
      move(exposure[1], hour, 0, value - previous, value * value - previous * previous)
    else
      move(exposure[1], hour, 1, value, value * value)
    end
    redis.call('HSET', feedback, metric .. ':' .. request_id,
      string.format('%.17g %d', value, taken))
    local requests, latency, cost, costs, rest = split(redis.call('HGET', key, field))
    local sums, found = {}, false
    for name, total, count in string.gmatch(rest, ' (%S+) (%S+) (%S+)') do
      total, count = tonumber(total), tonumber(count)
      if name == metric then
        found = true
        if previous then
          total = total + (value - previous)
        else
          total, count = total + value, count + 1
        end
      end
      sums[#sums + 1] = string.format(' %s %.17g %d', name, total, count)
    end
    if not found then
      sums[#sums + 1] = string.format(' %s %.17g %d', metric, value, 1)
    end
    save(key, field, requests, latency, cost, costs, table.concat(sums))
  end
end

for key, sums in pairs(moved) do
  for field, s in pairs(sums) do
    if s[1] ~= 0 then redis.call('HINCRBY', key, field .. '|n', s[1]) end
    add(key, field .. '|s', s[2])
    add(key, field .. '|q', s[3])
  end
end
return {written, applied, orphans}
"""

# One experiment's aggregates as a single JSON array of their values: a plain HVALS of 100,000
# values takes redis-py's pure-Python parser about 0.4 s, one JSON string of them under 0.2 s to
# build, send and decode. (cjson encodes an empty table as an object, hence the special case.)
READ_UNITS = """
local values = redis.call('HVALS', KEYS[1])
if #values == 0 then return '[]' end
return cjson.encode(values)
"""


class RedisStore:
    """A Store on Redis. Writes are WATCH/MULTI transactions, retried when another writer wins."""

    def __init__(self, url: str, *, prefix: str = "pg:", poll_interval: float = 0.5) -> None:
        self.url = url
        self.prefix = prefix
        self.poll_interval = poll_interval
        # A client made by from_url takes its retry policy from these arguments only (the
        # Redis() default does not reach a pool's connections): without them a command on a
        # pooled connection that a Redis restart killed failed at once, and the snapshot
        # watcher then backed off. A broken connection is retried on a new one, 3 times within
        # about 0.15 s, so a restart costs one quick reconnect. Timeouts are not retried: a hung
        # server would hold a call 4 x socket_timeout. (health_check_interval is not needed:
        # the watcher reads the revision on a pooled connection every poll interval anyway.)
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(
                ExponentialBackoff(cap=0.08, base=0.01), 3, supported_errors=(RedisConnectionError,)
            ),
            retry_on_error=[RedisConnectionError],
        )
        # Sent once per connection's server by EVALSHA, loaded again if the server lost it.
        self._record = self._client.register_script(RECORD)
        self._read_units = self._client.register_script(READ_UNITS)

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
                f"Redis store at {redact(self.url)} did not answer: {str(exc).rstrip('.')}. "
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
                self._read_registry(pipe, names)
                replies = await pipe.execute()
        return self._assemble(names, replies)

    def _read_registry(self, pipe: aioredis.client.Pipeline, names: list[str]) -> None:
        """Queue the reads of every prompt of `names`, the experiments and the revision."""
        for name in names:
            pipe.hvals(self._k("versions", name))
            pipe.get(self._k("activation", name))
            pipe.get(self._k("adoption", name))
        pipe.hvals(self._k("experiments"))
        pipe.get(self._k("revision"))
        pipe.get(self._k("lineage"))

    def _assemble(self, names: list[str], replies: list[object]) -> RegistrySnapshot:
        """The snapshot from the replies of `_read_registry` (in its order)."""
        *per_prompt, experiment_docs, revision, lineage = cast(list[Any], replies)
        experiments = _by_prompt(experiment_docs)
        prompts = {
            name: codec.load_state(
                name,
                per_prompt[3 * i],
                per_prompt[3 * i + 1],
                experiments.get(name, []),
                per_prompt[3 * i + 2],
            )
            for i, name in enumerate(names)
        }
        return RegistrySnapshot(prompts, _text(revision or b"0"), _text(lineage or b""))

    @property
    def location(self) -> str:
        return f"{redact(self.url)} prefix {self.prefix}"

    async def export(self) -> RegistryExport:
        with self._translate():
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        # The names are read before the transaction: a write in between
                        # changes the revision, and the transaction then reads again.
                        await pipe.watch(self._k("revision"))
                        members = await pipe.smembers(self._k("names"))
                        names = sorted(_text(n) for n in members)
                        pipe.multi()
                        self._read_registry(pipe, names)
                        pipe.lrange(self._k("audit"), 0, -1)
                        *replies, audit_docs = await pipe.execute()
                        break
                    except WatchError:
                        continue
        snapshot = self._assemble(names, replies)
        return RegistryExport(snapshot, tuple(codec.load_audit(d) for d in audit_docs))

    async def restore(self, backup: RegistryExport) -> None:
        registry = (self._k("names"), self._k("experiments"), self._k("audit"))
        with self._translate():
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(*registry, self._k("revision"))
                        held = [
                            await pipe.scard(registry[0]),
                            await pipe.hlen(registry[1]),
                            await pipe.llen(registry[2]),
                        ]
                        if any(held):
                            await pipe.unwatch()
                            raise StoreNotEmpty(
                                f"The store {self.location} is not empty ({held[0]} prompts, "
                                f"{held[1]} experiments, {held[2]} audit entries); restore "
                                "writes only into an empty store. Point GATEWAY_STORE_URL at "
                                "an empty one and run again."
                            )
                        pipe.multi()
                        self._write_backup(pipe, backup)
                        await pipe.execute()
                        return
                    except WatchError:
                        continue

    def _write_backup(self, pipe: aioredis.client.Pipeline, backup: RegistryExport) -> None:
        """Queue the writes of a whole export (see `restore`)."""
        for name, state in backup.snapshot.prompts.items():
            pipe.sadd(self._k("names"), name)
            if state.versions:
                pipe.hset(
                    self._k("versions", name),
                    mapping={v.version: codec.dump_version(v) for v in state.versions},
                )
            if state.active is not None or state.history:
                pipe.set(
                    self._k("activation", name), codec.dump_activation(state.active, state.history)
                )
            if state.experiments:
                pipe.hset(
                    self._k("experiments"),
                    mapping={e.id: codec.dump_experiment(e) for e in state.experiments},
                )
            if state.adoption is not None:
                pipe.set(self._k("adoption", name), codec.dump_adoption(state.adoption))
        if backup.audit:
            pipe.rpush(self._k("audit"), *(codec.dump_audit(e) for e in backup.audit))
            by_prompt: dict[str, list[bytes]] = {}
            for entry in backup.audit:
                by_prompt.setdefault(entry.prompt_name, []).append(codec.dump_audit(entry))
            for name, docs in by_prompt.items():
                pipe.rpush(self._k("audit", name), *docs)
        pipe.set(self._k("revision"), int(backup.snapshot.revision or 0) + 1)
        pipe.set(self._k("lineage"), secrets.token_hex(8))  # a restore starts a new life
        pipe.publish(self._k("changes"), "")

    async def prompt(self, name: str) -> PromptState:
        with self._translate():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hvals(self._k("versions", name))
                pipe.get(self._k("activation", name))
                pipe.hvals(self._k("experiments"))
                pipe.get(self._k("adoption", name))
                docs, activation, experiment_docs, adoption = await pipe.execute()
        ours = _by_prompt(experiment_docs).get(name, [])
        return codec.load_state(name, docs, activation, ours, adoption)

    async def apply(self, name: str, plan: Plan) -> Change:
        versions_key = self._k("versions", name)
        activation_key = self._k("activation", name)
        experiments_key = self._k("experiments")
        adoption_key = self._k("adoption", name)
        with self._translate():
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(
                            versions_key, activation_key, experiments_key, adoption_key
                        )
                        docs = await pipe.hvals(versions_key)
                        activation = await pipe.get(activation_key)
                        all_experiments = await pipe.hgetall(experiments_key)
                        adoption = await pipe.get(adoption_key)
                        ours = _by_prompt(list(all_experiments.values())).get(name, [])
                        state = codec.load_state(name, docs, activation, ours, adoption)
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
        if change.adoption is not None:
            pipe.set(self._k("adoption", name), codec.dump_adoption(change.adoption))
        if change.audit:
            docs = [codec.dump_audit(e) for e in change.audit]
            pipe.rpush(self._k("audit"), *docs)
            pipe.rpush(self._k("audit", name), *docs)
        pipe.incr(self._k("revision"))
        pipe.setnx(self._k("lineage"), secrets.token_hex(8))
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

    async def last_changes(self) -> dict[str, AuditEntry]:
        with self._translate():
            names = sorted(_text(n) for n in await self._client.smembers(self._k("names")))
            async with self._client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.lindex(self._k("audit", name), -1)  # each prompt's own list: O(1)
                docs = await pipe.execute()
        return {name: codec.load_audit(doc) for name, doc in zip(names, docs, strict=True) if doc}

    async def record_outcomes(
        self, exposures: Sequence[ExposureRow], feedback: Sequence[Feedback]
    ) -> Recorded:
        codec.check_outcomes(exposures, feedback)
        # The rows as they are: the script makes the documents, their times' text and the
        # keys, so Python makes no text, datetime or tuple per exposure (benchmarks/README.md).
        votes = [(f.request_id, f.metric, f.value, f.at) for f in feedback]
        args = (
            self._k("unit-totals", ""),
            orjson.dumps(exposures),
            orjson.dumps(votes),
            self._k("periods", ""),
            PERIOD_CHARS,
        )
        with self._translate():
            written, applied, orphans = await self._record(
                keys=[self._k("exposures"), self._k("feedback")], args=args
            )
        return Recorded(exposures=written, feedback=applied, orphans=orphans)

    async def exposure(self, request_id: str) -> Exposure | None:
        with self._translate():
            doc = await self._client.hget(self._k("exposures"), request_id)
        return codec.load_exposure(request_id, doc) if doc else None

    async def unit_outcomes(self, experiment_id: str, metric: str) -> list[UnitOutcome]:
        codec.check_metric(metric)
        with self._translate():
            raw = await self._read_units(keys=[self._k("unit-totals", experiment_id)])
        # Decoding 100,000 units takes a quarter of a second: off the event loop that serves calls.
        return await asyncio.to_thread(_unit_outcomes, raw, metric)

    async def arm_totals(self, experiment_id: str, metric: str) -> tuple[ArmTotals, ArmTotals]:
        units = await self.unit_outcomes(experiment_id, metric)
        return await asyncio.to_thread(arm_totals, units)

    async def record_captures(self, batch: Sequence[CapturedPrompt], *, limit: int) -> None:
        if not batch:
            return
        docs_key, seen_key = self._k("captured"), self._k("captured-seen")
        keys = list(dict.fromkeys(p.fingerprint for p in batch))
        with self._translate():
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        # WATCH makes read-merge-write one step: a replica that wrote in
                        # between makes this one read and merge again, so both batches count.
                        await pipe.watch(docs_key)
                        found = await pipe.hmget(docs_key, keys)
                        stored = {
                            fp: codec.load_captured(doc)
                            for fp, doc in zip(keys, found, strict=True)
                            if doc is not None
                        }
                        for prompt in batch:
                            stored[prompt.fingerprint] = merge(
                                stored.get(prompt.fingerprint), prompt
                            )
                        pipe.multi()
                        pipe.hset(
                            docs_key,
                            mapping={fp: codec.dump_captured(p) for fp, p in stored.items()},
                        )
                        pipe.zadd(
                            seen_key, {fp: p.last_seen.timestamp() for fp, p in stored.items()}
                        )
                        await pipe.execute()
                        break
                    except WatchError:
                        continue
            # The bound: drop the least recently seen beyond `limit`.
            old = await self._client.zrange(seen_key, 0, -limit - 1)
            if old:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.hdel(docs_key, *old)
                    pipe.zrem(seen_key, *old)
                    await pipe.execute()

    async def captured(self) -> list[CapturedPrompt]:
        with self._translate():
            docs = await self._client.hvals(self._k("captured"))
        found = [codec.load_captured(doc) for doc in docs]
        found.sort(key=lambda p: (-p.last_seen.timestamp(), p.fingerprint))
        return found

    async def period_totals(self, experiment_id: str, metric: str) -> list[PeriodTotal]:
        codec.check_metric(metric)
        with self._translate():
            fields = await self._client.hgetall(self._k("periods", experiment_id))
        return _period_totals(fields, metric)

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


def _unit_outcomes(raw: bytes, metric: str) -> list[UnitOutcome]:
    """Units' outcomes of `metric` from the values of a unit-totals hash as JSON (see the layout).

    One loop with the metric's positions chosen once: it runs once per unit, 100,000 times for a
    large experiment.
    """
    total_at, count_at = {"latency": (1, 0), "cost_per_task": (2, 3)}.get(metric, (0, 0))
    outcomes: list[UnitOutcome] = []
    append = outcomes.append
    for value in orjson.loads(raw):
        sums, _, field = value.partition("|")
        variant, _, unit = field.partition(":")
        words = sums.split(" ")
        if total_at:
            total, count = float(words[total_at]), int(words[count_at])
        elif metric in words:  # " metric total count" after the four exposure sums
            at = words.index(metric, 4)
            total, count = float(words[at + 1]), int(words[at + 2])
        else:
            total, count = 0.0, 0
        append(UnitOutcome(cast(Variant, variant), unit, int(words[0]), total, count))
    return outcomes


def _period_totals(fields: dict[bytes | str, bytes | str], metric: str) -> list[PeriodTotal]:
    """PeriodTotals of `metric` from a periods hash (see the layout)."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    for raw, value in fields.items():
        hour, variant, name, which = _text(raw).split("|")
        sums.setdefault((hour, variant, name), [0.0, 0.0, 0.0])["nsq".index(which)] = float(value)
    totals = []
    for (hour, variant, name), (requests, _, _) in sums.items():
        if name != "latency":
            continue
        count, total, squares = sums.get((hour, variant, metric), (0.0, 0.0, 0.0))
        totals.append(
            PeriodTotal(hour, cast(Variant, variant), int(requests), int(count), total, squares)
        )
    return totals


def _by_prompt(docs: list[bytes | str]) -> dict[str, list[Experiment]]:
    """Decode experiment documents and group them by prompt."""
    grouped: dict[str, list[Experiment]] = {}
    for doc in docs:
        experiment = codec.load_experiment(doc)
        grouped.setdefault(experiment.prompt_name, []).append(experiment)
    return grouped
