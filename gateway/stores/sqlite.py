"""The embedded store: one SQLite file, safe for several processes on one host (WAL, IMMEDIATE).

Adoption bindings (PRODUCT §14) are one row per adopted prompt in `adoptions`, read with the
registry; captured system prompts are one row per fingerprint in `captured` (not registry data:
writing them does not change the revision, so gateways do not reload for them).

Experiment outcomes (PRODUCT §11) live in four tables beside the registry's:

    exposures      one row per request id: the call as recorded (Exposure's fields)
    feedback       one row per (request id, metric): the latest value, and when it was taken
    unit_totals    one row per (experiment, variant, unit): requests, latency and cost sums
    unit_feedback  one row per (experiment, metric, variant, unit): the feedback sum and count
    period_totals  one row per (experiment, hour, variant, metric): count, sum, sum of squares

Each `record_outcomes` batch updates the unit and period tables in the transaction that writes its
rows, so `unit_outcomes` reads one row per unit and `period_totals` one per hour and arm: neither
scans exposures. `arm_totals` sums the unit rows in SQL, one arm at a time (a range of each
table's primary key): two passes, the mean of the units' means and then the squared deviations
from it, in one read transaction, so no row reaches Python.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

from gateway.core.capture import CapturedPrompt, merge
from gateway.core.model import AuditEntry, Experiment, PromptState, RegistrySnapshot
from gateway.core.outcomes import (
    NO_UNITS,
    PERIOD_CHARS,
    ArmTotals,
    Exposure,
    ExposureRow,
    Feedback,
    PeriodTotal,
    UnitOutcome,
    Variant,
)
from gateway.core.registry import Change
from gateway.errors import StoreNotEmpty, StoreUnavailable
from gateway.stores import codec
from gateway.stores.backup import RegistryExport
from gateway.stores.base import Plan, Recorded
from gateway.stores.sqlite_writer import WriterProcess

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version TEXT NOT NULL, doc BLOB NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS activations (name TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, prompt_name TEXT NOT NULL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS experiments_by_prompt ON experiments (prompt_name);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, prompt_name TEXT NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS adoptions (name TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS captured (
    fingerprint TEXT PRIMARY KEY, last_seen TEXT NOT NULL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS captured_by_last_seen ON captured (last_seen);
-- One prompt's entries (the audit page's filter, each prompt's last change) without a scan.
CREATE INDEX IF NOT EXISTS audit_by_prompt ON audit (prompt_name, seq);
CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER);
INSERT OR IGNORE INTO revision VALUES (1, 0);
CREATE TABLE IF NOT EXISTS lineage (id INTEGER PRIMARY KEY CHECK (id = 1), value TEXT NOT NULL);
INSERT OR IGNORE INTO lineage VALUES (1, lower(hex(randomblob(8))));
-- exposures keeps a rowid: rows are appended in arrival order and only the request id's index
-- takes the random inserts, which makes a batch about a quarter cheaper than WITHOUT ROWID.
CREATE TABLE IF NOT EXISTS exposures (
    request_id TEXT PRIMARY KEY, experiment_id TEXT NOT NULL, variant TEXT NOT NULL,
    version TEXT NOT NULL, unit TEXT NOT NULL, at TEXT NOT NULL, latency_ms REAL NOT NULL,
    input_tokens INTEGER, output_tokens INTEGER, cost_usd REAL, status INTEGER NOT NULL,
    trace_id TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (request_id, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unit_totals (
    experiment_id TEXT NOT NULL, variant TEXT NOT NULL, unit TEXT NOT NULL,
    requests INTEGER NOT NULL, latency_total REAL NOT NULL,
    cost_total REAL NOT NULL, cost_count INTEGER NOT NULL,
    PRIMARY KEY (experiment_id, variant, unit)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unit_feedback (
    experiment_id TEXT NOT NULL, metric TEXT NOT NULL, variant TEXT NOT NULL, unit TEXT NOT NULL,
    total REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (experiment_id, metric, variant, unit)
) WITHOUT ROWID;
-- metric `latency` counts every exposure: its count is the hour's requests.
CREATE TABLE IF NOT EXISTS period_totals (
    experiment_id TEXT NOT NULL, period TEXT NOT NULL, variant TEXT NOT NULL, metric TEXT NOT NULL,
    count INTEGER NOT NULL, total REAL NOT NULL, squares REAL NOT NULL,
    PRIMARY KEY (experiment_id, period, variant, metric)
) WITHOUT ROWID;
"""

# Rows of a batch looked up in one statement: the ids travel as one JSON array parameter, so a
# batch of any size needs no chunking under SQLite's limit on bound variables.
_IN_BATCH = "request_id IN (SELECT value FROM json_each(?))"

# A batch's exposures go in with one bound value per field (a request id already stored is
# skipped); the unit sums are then moved in SQL from the rows just inserted (rowid past the
# batch's start), so none of it is built or bound in Python.
_INSERT_EXPOSURES = """
INSERT INTO exposures (request_id, experiment_id, variant, version, unit, at, latency_ms,
                       input_tokens, output_tokens, cost_usd, status, trace_id)
VALUES {values}
ON CONFLICT (request_id) DO NOTHING
"""

_ADD_EXPOSURES = """
INSERT INTO unit_totals (experiment_id, variant, unit, requests, latency_total, cost_total,
                         cost_count)
SELECT experiment_id, variant, unit, 1, latency_ms, coalesce(cost_usd, 0.0), cost_usd IS NOT NULL
FROM exposures WHERE rowid > ?1 ORDER BY rowid
ON CONFLICT (experiment_id, variant, unit) DO UPDATE SET
    requests = requests + 1,
    latency_total = latency_total + excluded.latency_total,
    cost_total = cost_total + excluded.cost_total,
    cost_count = cost_count + excluded.cost_count
"""

_IDS_SINCE = "SELECT request_id FROM exposures WHERE rowid > ?"

_MOVE_FEEDBACK = """
INSERT INTO unit_feedback (experiment_id, variant, unit, metric, total, count)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (experiment_id, metric, variant, unit) DO UPDATE SET
    total = total + excluded.total, count = count + excluded.count
"""

_MOVE_PERIOD = """
INSERT INTO period_totals (experiment_id, period, variant, metric, count, total, squares)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (experiment_id, period, variant, metric) DO UPDATE SET
    count = count + excluded.count, total = total + excluded.total,
    squares = squares + excluded.squares
"""

_PERIODS = """
SELECT r.period, r.variant, r.count, coalesce(m.count, 0), coalesce(m.total, 0.0),
       coalesce(m.squares, 0.0)
FROM period_totals AS r LEFT JOIN period_totals AS m
    ON m.experiment_id = r.experiment_id AND m.period = r.period AND m.variant = r.variant
       AND m.metric = ?
WHERE r.experiment_id = ? AND r.metric = 'latency'
"""

PeriodKey = tuple[str, str, str, str]
"""(experiment id, hour, variant, metric) of a period_totals row."""

_UNITS = {
    "latency": "SELECT variant, unit, requests, latency_total, requests FROM unit_totals",
    "cost_per_task": "SELECT variant, unit, requests, cost_total, cost_count FROM unit_totals",
}
_UNITS_FEEDBACK = """
SELECT u.variant, u.unit, u.requests, coalesce(f.total, 0.0), coalesce(f.count, 0)
FROM unit_totals AS u LEFT JOIN unit_feedback AS f
    ON f.experiment_id = u.experiment_id AND f.metric = ? AND f.variant = u.variant
       AND f.unit = u.unit
"""

# Each unit's mean of a metric, per arm: (table, the sum, the count, more of the WHERE clause).
_UNIT_MEANS = {
    "latency": ("unit_totals", "latency_total", "requests", ""),
    "cost_per_task": ("unit_totals", "cost_total", "cost_count", ""),
}
_FEEDBACK_MEANS = ("unit_feedback", "total", "count", "AND metric = :metric")
_ARM_UNITS = """
SELECT count(*), coalesce(sum(requests), 0) FROM unit_totals
WHERE experiment_id = :experiment AND variant = :variant
"""


def _arm_statements(metric: str) -> tuple[str, str]:
    """The two passes over one arm's units of `metric`: (units with a value and the mean of their
    means; the sum of their squared deviations from `:mean`)."""
    table, total, count, more = _UNIT_MEANS.get(metric, _FEEDBACK_MEANS)
    where = (
        f"FROM {table} WHERE experiment_id = :experiment AND variant = :variant {more} "
        f"AND {count} > 0"
    )
    mean = f"{total} / {count}"  # REAL / INTEGER: a floating-point division
    return (
        f"SELECT count(*), avg({mean}) {where}",
        f"SELECT sum(({mean} - :mean) * ({mean} - :mean)) {where}",
    )


class SQLiteStore:
    """A Store on a SQLite file. Blocking calls run in a worker thread, one connection each;
    experiment outcome batches are written by a child process (`sqlite_writer`)."""

    def __init__(self, path: str | Path, *, poll_interval: float = 0.2) -> None:
        self.path = str(path)
        self.poll_interval = poll_interval
        self._ready = False
        self._outcomes: sqlite3.Connection | None = None
        self._outcomes_file: tuple[int, int] | None = None
        """Which file `_outcomes` was opened on (device, inode)."""
        self._outcomes_lock = threading.Lock()
        self._writer = WriterProcess(self.path)
        """Writes `record_outcomes`' batches in a child process (stores/sqlite_writer.py)."""

    @classmethod
    def from_url(cls, url: str, *, poll_interval: float = 0.2) -> SQLiteStore:
        """`sqlite:///relative.db` or `sqlite:////absolute/path.db`."""
        return cls(url.removeprefix("sqlite:///"), poll_interval=poll_interval)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path} cannot be opened: {exc}") from exc
        try:
            if not self._ready:
                _prepare(conn)
                self._ready = True
            yield conn
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite store {self.path} failed: {exc}") from exc
        finally:
            conn.close()

    async def ping(self) -> None:
        await asyncio.to_thread(self._ping)

    def _ping(self) -> None:
        with self._connect() as conn:
            conn.execute("SELECT value FROM revision").fetchone()

    async def close(self) -> None:
        # Connections live for one call each, but for the one outcome batches are written on
        # (in the writer process, or here when this process is the writer).
        await asyncio.to_thread(self._writer.close)
        with self._outcomes_lock:
            if self._outcomes is not None:
                self._outcomes.close()
                self._outcomes = None

    async def snapshot(self) -> RegistrySnapshot:
        return await asyncio.to_thread(self._snapshot)

    def _snapshot(self) -> RegistrySnapshot:
        with self._connect() as conn:
            conn.execute("BEGIN")  # one read transaction: a consistent view of every table
            snapshot = self._read_snapshot(conn)
            conn.execute("COMMIT")
        return snapshot

    @property
    def location(self) -> str:
        return "sqlite:///" + str(Path(self.path).resolve())

    async def export(self) -> RegistryExport:
        return await asyncio.to_thread(self._export)

    def _export(self) -> RegistryExport:
        with self._connect() as conn:
            conn.execute("BEGIN")
            snapshot = self._read_snapshot(conn)
            audit = [
                codec.load_audit(d) for (d,) in conn.execute("SELECT doc FROM audit ORDER BY seq")
            ]
            conn.execute("COMMIT")
        return RegistryExport(snapshot, tuple(audit))

    async def restore(self, backup: RegistryExport) -> None:
        await asyncio.to_thread(self._restore, backup)

    def _restore(self, backup: RegistryExport) -> None:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                held = [
                    conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in ("versions", "experiments", "audit")
                ]
                if any(held):
                    raise StoreNotEmpty(_not_empty(self.location, *held))
                for name, state in backup.snapshot.prompts.items():
                    self._write(conn, name, _restored(state))
                conn.executemany(
                    "INSERT INTO audit (prompt_name, doc) VALUES (?, ?)",
                    [(e.prompt_name, codec.dump_audit(e)) for e in backup.audit],
                )
                revision = int(backup.snapshot.revision or 0) + 1
                conn.execute("UPDATE revision SET value = ?", (revision,))
                # A restore starts a new life of the store (RegistrySnapshot.lineage).
                conn.execute("UPDATE lineage SET value = lower(hex(randomblob(8)))")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _read_snapshot(conn: sqlite3.Connection) -> RegistrySnapshot:
        """The registry as of the open read transaction on `conn`."""
        revision = conn.execute("SELECT value FROM revision").fetchone()[0]
        (lineage,) = conn.execute("SELECT value FROM lineage").fetchone()
        activations = dict(conn.execute("SELECT name, doc FROM activations").fetchall())
        versions: dict[str, list[bytes]] = {}
        for name, doc in conn.execute("SELECT name, doc FROM versions"):
            versions.setdefault(name, []).append(doc)
        experiments: dict[str, list[Experiment]] = {}
        for name, doc in conn.execute("SELECT prompt_name, doc FROM experiments"):
            experiments.setdefault(name, []).append(codec.load_experiment(doc))
        adoptions = dict(conn.execute("SELECT name, doc FROM adoptions").fetchall())
        prompts = {
            name: codec.load_state(
                name,
                docs,
                activations.get(name),
                experiments.get(name, []),
                adoptions.get(name),
            )
            for name, docs in versions.items()
        }
        return RegistrySnapshot(prompts, str(revision), lineage)

    async def prompt(self, name: str) -> PromptState:
        return await asyncio.to_thread(self._prompt, name)

    def _prompt(self, name: str) -> PromptState:
        with self._connect() as conn:
            conn.execute("BEGIN")
            state = self._read_state(conn, name)
            conn.execute("COMMIT")
        return state

    @staticmethod
    def _read_state(conn: sqlite3.Connection, name: str) -> PromptState:
        docs = [d for (d,) in conn.execute("SELECT doc FROM versions WHERE name = ?", (name,))]
        row = conn.execute("SELECT doc FROM activations WHERE name = ?", (name,)).fetchone()
        experiments = [
            codec.load_experiment(d)
            for (d,) in conn.execute("SELECT doc FROM experiments WHERE prompt_name = ?", (name,))
        ]
        adopted = conn.execute("SELECT doc FROM adoptions WHERE name = ?", (name,)).fetchone()
        return codec.load_state(
            name, docs, row[0] if row else None, experiments, adopted[0] if adopted else None
        )

    async def apply(self, name: str, plan: Plan) -> Change:
        return await asyncio.to_thread(self._apply, name, plan)

    def _apply(self, name: str, plan: Plan) -> Change:
        with self._connect() as conn:
            # IMMEDIATE takes the write lock before reading, so concurrent writers serialize.
            conn.execute("BEGIN IMMEDIATE")
            try:
                state = self._read_state(conn, name)
                taken = frozenset(i for (i,) in conn.execute("SELECT id FROM experiments"))
                change = plan(state, taken)
                if not change.is_empty:
                    self._write(conn, name, change)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return change

    @staticmethod
    def _write(conn: sqlite3.Connection, name: str, change: Change) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO versions (name, version, doc) VALUES (?, ?, ?)",
            [(v.name, v.version, codec.dump_version(v)) for v in change.versions],
        )
        if change.activation_changed:
            conn.execute(
                "INSERT OR REPLACE INTO activations (name, doc) VALUES (?, ?)",
                (name, codec.dump_activation(change.active, change.history)),
            )
        conn.executemany(
            "INSERT OR REPLACE INTO experiments (id, prompt_name, doc) VALUES (?, ?, ?)",
            [(e.id, e.prompt_name, codec.dump_experiment(e)) for e in change.experiments],
        )
        if change.adoption is not None:
            conn.execute(
                "INSERT OR REPLACE INTO adoptions (name, doc) VALUES (?, ?)",
                (name, codec.dump_adoption(change.adoption)),
            )
        conn.executemany(
            "INSERT INTO audit (prompt_name, doc) VALUES (?, ?)",
            [(e.prompt_name, codec.dump_audit(e)) for e in change.audit],
        )
        conn.execute("UPDATE revision SET value = value + 1")

    async def find_experiment(self, experiment_id: str) -> Experiment | None:
        return await asyncio.to_thread(self._find_experiment, experiment_id)

    def _find_experiment(self, experiment_id: str) -> Experiment | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT doc FROM experiments WHERE id = ?", (experiment_id,)
            ).fetchone()
        return codec.load_experiment(row[0]) if row else None

    async def audit(self, *, prompt_name: str | None = None, limit: int = 100) -> list[AuditEntry]:
        return await asyncio.to_thread(self._audit, prompt_name, limit)

    def _audit(self, prompt_name: str | None, limit: int) -> list[AuditEntry]:
        with self._connect() as conn:
            if prompt_name is None:
                rows = conn.execute(
                    "SELECT doc FROM audit ORDER BY seq DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT doc FROM audit WHERE prompt_name = ? ORDER BY seq DESC LIMIT ?",
                    (prompt_name, limit),
                ).fetchall()
        return [codec.load_audit(doc) for (doc,) in reversed(rows)]

    async def last_changes(self) -> dict[str, AuditEntry]:
        return await asyncio.to_thread(self._last_changes)

    def _last_changes(self) -> dict[str, AuditEntry]:
        with self._connect() as conn:
            # max(seq) per prompt_name reads one entry per prompt of audit_by_prompt.
            rows = conn.execute(
                "SELECT prompt_name, doc FROM audit WHERE seq IN "
                "(SELECT max(seq) FROM audit GROUP BY prompt_name)"
            ).fetchall()
        return {name: codec.load_audit(doc) for name, doc in rows}

    async def record_outcomes(
        self, exposures: Sequence[ExposureRow], feedback: Sequence[Feedback]
    ) -> Recorded:
        codec.check_outcomes(exposures, feedback)
        return await asyncio.to_thread(self._writer.record, exposures, feedback)

    @property
    def writer_pid(self) -> int | None:
        """The outcome writer's process id while one runs (None before the first batch)."""
        return self._writer.pid

    def write_outcomes(
        self, exposures: Sequence[ExposureRow], feedback: Sequence[Feedback]
    ) -> Recorded:
        """`record_outcomes`' write itself, in this process and blocking: what the outcome
        writer process runs for each batch (the batch checked by the gateway already)."""
        with self._outcomes_lock, self._outcome_connection() as conn:
            # IMMEDIATE: the batch's reads (which ids are stored, earlier feedback values) and its
            # writes are one step, so two writers cannot both take a request id as new.
            conn.execute("BEGIN IMMEDIATE")
            try:
                written = _write_exposures(conn, exposures)
                applied, orphans = _write_feedback(conn, feedback)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return Recorded(exposures=written, feedback=applied, orphans=orphans)

    @contextmanager
    def _outcome_connection(self) -> Iterator[sqlite3.Connection]:
        """The connection outcome batches are written on, kept open between batches.

        Batches come several times a second and insert at random places in two indexes: a
        connection opened per batch would start with an empty page cache every time and read
        those indexes' pages again (it made each exposure cost about twice as much). A failure
        closes it; the next batch opens a new one.
        """
        conn = self._outcomes
        if conn is not None and _identity(self.path) != self._outcomes_file:
            conn.close()  # the file was replaced (a restore into a new file): write to the new one
            conn = self._outcomes = None
        if conn is None:
            with self._connect():  # creates the schema on first use
                pass
            try:
                conn = sqlite3.connect(
                    self.path, timeout=10, isolation_level=None, check_same_thread=False
                )
                # In WAL mode NORMAL syncs the log at checkpoints, not at every commit: a batch
                # survives the gateway's crash; only an OS crash or power loss can lose the last
                # batches (never corrupt the file). Registry writes keep FULL. 0.3-0.8 µs of CPU
                # and 1.2-1.8 µs of waiting less per exposure.
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite store {self.path} cannot be opened: {exc}") from exc
            self._outcomes = conn
            self._outcomes_file = _identity(self.path)
        try:
            yield conn
        except sqlite3.Error as exc:
            self._outcomes = None
            conn.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(f"SQLite store {self.path} failed: {exc}") from exc
            raise

    async def exposure(self, request_id: str) -> Exposure | None:
        return await asyncio.to_thread(self._exposure, request_id)

    def _exposure(self, request_id: str) -> Exposure | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT request_id, experiment_id, variant, version, unit, at, latency_ms, "
                "input_tokens, output_tokens, cost_usd, status, trace_id FROM exposures "
                "WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            return None
        return codec.exposure_from_fields(*row)

    async def unit_outcomes(self, experiment_id: str, metric: str) -> list[UnitOutcome]:
        codec.check_metric(metric)
        return await asyncio.to_thread(self._unit_outcomes, experiment_id, metric)

    def _unit_outcomes(self, experiment_id: str, metric: str) -> list[UnitOutcome]:
        with self._connect() as conn:
            if metric in _UNITS:
                rows = conn.execute(
                    _UNITS[metric] + " WHERE experiment_id = ?", (experiment_id,)
                ).fetchall()
            else:
                rows = conn.execute(
                    _UNITS_FEEDBACK + " WHERE u.experiment_id = ?", (metric, experiment_id)
                ).fetchall()
        return [UnitOutcome(*row) for row in rows]

    async def arm_totals(self, experiment_id: str, metric: str) -> tuple[ArmTotals, ArmTotals]:
        codec.check_metric(metric)
        return await asyncio.to_thread(self._arm_totals, experiment_id, metric)

    def _arm_totals(self, experiment_id: str, metric: str) -> tuple[ArmTotals, ArmTotals]:
        means, deviations = _arm_statements(metric)

        def arm(conn: sqlite3.Connection, variant: Variant) -> ArmTotals:
            bound = {"experiment": experiment_id, "variant": variant, "metric": metric}
            users, requests = conn.execute(_ARM_UNITS, bound).fetchone()
            if not users:
                return NO_UNITS
            with_value, mean = conn.execute(means, bound).fetchone()
            if not with_value:
                return ArmTotals(users, requests, 0, None, None)
            (squares,) = conn.execute(deviations, {**bound, "mean": mean}).fetchone()
            return ArmTotals(users, requests, with_value, mean, float(squares))

        with self._connect() as conn:
            conn.execute("BEGIN")  # one snapshot: a batch written between the passes is not seen
            try:
                return arm(conn, "control"), arm(conn, "treatment")
            finally:
                conn.execute("COMMIT")

    async def record_captures(self, batch: Sequence[CapturedPrompt], *, limit: int) -> None:
        if batch:
            await asyncio.to_thread(self._record_captures, batch, limit)

    def _record_captures(self, batch: Sequence[CapturedPrompt], limit: int) -> None:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # read, merge and write as one step across writers
            try:
                keys = orjson.dumps([p.fingerprint for p in batch]).decode()
                stored = {
                    fp: codec.load_captured(doc)
                    for fp, doc in conn.execute(
                        "SELECT fingerprint, doc FROM captured "
                        "WHERE fingerprint IN (SELECT value FROM json_each(?))",
                        (keys,),
                    )
                }
                for prompt in batch:
                    stored[prompt.fingerprint] = merge(stored.get(prompt.fingerprint), prompt)
                conn.executemany(
                    "INSERT OR REPLACE INTO captured (fingerprint, last_seen, doc) "
                    "VALUES (?, ?, ?)",
                    [
                        (p.fingerprint, codec.utc_iso(p.last_seen), codec.dump_captured(p))
                        for p in stored.values()
                    ],
                )
                conn.execute(
                    "DELETE FROM captured WHERE fingerprint IN (SELECT fingerprint FROM captured "
                    "ORDER BY last_seen DESC, fingerprint LIMIT -1 OFFSET ?)",
                    (limit,),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    async def captured(self) -> list[CapturedPrompt]:
        return await asyncio.to_thread(self._captured)

    def _captured(self) -> list[CapturedPrompt]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT doc FROM captured ORDER BY last_seen DESC, fingerprint"
            ).fetchall()
        return [codec.load_captured(doc) for (doc,) in rows]

    async def period_totals(self, experiment_id: str, metric: str) -> list[PeriodTotal]:
        codec.check_metric(metric)
        return await asyncio.to_thread(self._period_totals, experiment_id, metric)

    def _period_totals(self, experiment_id: str, metric: str) -> list[PeriodTotal]:
        with self._connect() as conn:
            rows = conn.execute(_PERIODS, (metric, experiment_id)).fetchall()
        return [PeriodTotal(*row) for row in rows]

    async def changes(self) -> AsyncIterator[None]:
        # PRAGMA data_version changes on one connection whenever another connection commits,
        # so a single long-lived connection polls it cheaply without reading any table. Only
        # then is the registry's revision read: experiment outcomes are written many times a
        # second and must not make every gateway reload its snapshot.
        conn = await asyncio.to_thread(self._watch_connection)
        # A cancelled watcher leaves its worker thread running the query it started: the
        # connection is closed by a thread that waits for the lock, never under a query (closing
        # it mid-query crashed the interpreter).
        busy = threading.Lock()

        def poll(query: Callable[[sqlite3.Connection], int]) -> int:
            with busy:
                return query(conn)

        def close() -> None:
            with busy:
                conn.close()

        try:
            opened = _identity(self.path)
            seen = await asyncio.to_thread(poll, _data_version)
            revision = await asyncio.to_thread(poll, _revision)
            yield None
            while True:
                await asyncio.sleep(self.poll_interval)
                if _identity(self.path) != opened:
                    # The file was deleted or replaced (a restore into a new file): the watch
                    # connection still reads the old one. Start over on the file there now.
                    raise StoreUnavailable(f"SQLite store {self.path} was replaced; reopening it.")
                current = await asyncio.to_thread(poll, _data_version)
                if current == seen:
                    continue
                seen = current
                latest = await asyncio.to_thread(poll, _revision)
                if latest != revision:
                    revision = latest
                    yield None
        finally:
            threading.Thread(target=close, name="sqlite-watch-close", daemon=True).start()

    def _watch_connection(self) -> sqlite3.Connection:
        with self._connect():  # creates the schema on first use
            pass
        if not Path(self.path).exists():
            raise StoreUnavailable(f"SQLite store {self.path} does not exist.")
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)


def _restored(state: PromptState) -> Change:
    """The change that writes one exported prompt as it was: versions, activation, experiments
    (its audit entries are written apart, in the export's order across prompts)."""
    return Change(
        versions=state.versions,
        active=state.active,
        history=state.history,
        activation_changed=state.active is not None or bool(state.history),
        experiments=state.experiments,
        adoption=state.adoption,
    )


def _not_empty(location: str, versions: int, experiments: int, audit: int) -> str:
    return (
        f"The store {location} is not empty ({versions} versions, {experiments} experiments, "
        f"{audit} audit entries); restore writes only into an empty store. Point "
        "GATEWAY_STORE_URL at an empty one and run again."
    )


def _prepare(conn: sqlite3.Connection) -> None:
    """Turn the file to WAL and create the tables, once per store object.

    Converting a new file to WAL upgrades a read lock to a write lock, which SQLite refuses at once
    (waiting could deadlock) while another connection is converting it too; so processes and
    stores opening a fresh file together retry for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            _add_columns(conn)
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


_ADDED_COLUMNS = (
    ("exposures", "trace_id", "TEXT"),
    ("feedback", "at", "INTEGER NOT NULL DEFAULT 0"),
)
"""Columns added to a table after stores were made with it: (table, column, type)."""


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a file made by an earlier version the columns added since (SCHEMA only creates
    tables that are missing). Another process adding the same column at once is no error."""
    for table, column, kind in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column in present:
            continue
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


def _write_exposures(conn: sqlite3.Connection, exposures: Sequence[ExposureRow]) -> int:
    """Insert the exposures whose request id is new and add them to their units and periods;
    how many were new. Runs inside the batch's IMMEDIATE transaction: no other writer adds rows
    in between, so the rows past the table's last rowid before the insert are this batch's."""
    if not exposures:
        return 0
    (start,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM exposures").fetchone()
    # A row's fields are the columns in order: a batch binds as one flat list, its times
    # (every WIDTH-th value from AT) formatted in place.
    values: list[object] = [value for e in exposures for value in e]
    times = [codec.utc_text(at) for at in values[_AT::_WIDTH]]  # type: ignore[arg-type]
    values[_AT::_WIDTH] = times
    _insert_rows(conn, _INSERT_EXPOSURES, values, _WIDTH)
    (written,) = conn.execute("SELECT count(*) FROM exposures WHERE rowid > ?", (start,)).fetchone()
    if not written:
        return 0
    conn.execute(_ADD_EXPOSURES, (start,))
    new: Iterable[tuple[ExposureRow, str]] = zip(exposures, times, strict=True)
    if written < len(exposures):
        new = _inserted(conn, start, new)
    _move_periods(conn, _hour_sums(new))
    return int(written)


def _hour_sums(exposures: Iterable[tuple[ExposureRow, str]]) -> dict[PeriodKey, list[float]]:
    """The period_totals rows that `exposures` (each with its time as stored) add: count, sum and
    sum of squares of latency, and of cost where there is one, per experiment, hour and arm.

    Added up here rather than by a GROUP BY over the rows just inserted (its sorter alone took
    1.35 µs per exposure), and inline rather than through `_add` as feedback is (a call per
    value cost about 0.45 µs more per exposure): the write went from 5.22 to 4.40-4.46 µs per
    exposure (`benchmarks/bench_exposure_write.py`)."""
    hours: dict[tuple[str, str, str], list[float]] = {}
    for (_, experiment_id, variant, _, _, _, latency, _, _, cost, _, _), at in exposures:
        key = (experiment_id, at[:PERIOD_CHARS], variant)
        sums = hours.get(key)
        if sums is None:
            sums = hours[key] = [0, 0.0, 0.0, 0, 0.0, 0.0]
        sums[0] += 1
        sums[1] += latency
        sums[2] += latency * latency
        if cost is not None:
            sums[3] += 1
            sums[4] += cost
            sums[5] += cost * cost
    periods: dict[PeriodKey, list[float]] = {}
    for (experiment_id, hour, variant), sums in hours.items():
        periods[experiment_id, hour, variant, "latency"] = sums[:3]
        if sums[3]:
            periods[experiment_id, hour, variant, "cost_per_task"] = sums[3:]
    return periods


def _inserted(
    conn: sqlite3.Connection, start: int, batch: Iterable[tuple[ExposureRow, str]]
) -> Iterator[tuple[ExposureRow, str]]:
    """The exposures of `batch` (with their times) that went in as rows past `start`: a request
    id stored before is skipped, and of one sent twice only the first went in."""
    stored = {rid for (rid,) in conn.execute(_IDS_SINCE, (start,))}
    for e, at in batch:
        if e[0] in stored:
            stored.discard(e[0])
            yield e, at


_WIDTH = len(Exposure._fields)
_AT = Exposure._fields.index("at")

ROWS_PER_STATEMENT = (100, 10, 1)
"""Rows one INSERT carries: as many 100s as fit, then 10s, then single rows. sqlite3's
`executemany` binds and steps row by row, giving up the GIL around each step: with the event
loop's thread busy serving calls, every row of a batch then waited for the GIL twice, and those
hand-offs cost the serving thread more than the writing itself. Three statement sizes, each
prepared once and kept in sqlite3's statement cache (a statement per remainder size was
prepared again for most batches)."""


def _insert_rows(conn: sqlite3.Connection, sql: str, values: list[object], width: int) -> None:
    """Run `sql` (an INSERT whose `VALUES` list is `{values}`) over `values`, the rows' fields
    one after another (`width` per row), as few statements as ROWS_PER_STATEMENT's sizes allow."""
    rows, at = len(values) // width, 0
    one = "(" + ", ".join("?" * width) + ")"
    for size in ROWS_PER_STATEMENT:
        statement = sql.format(values=", ".join([one] * size))
        while rows - at >= size:
            conn.execute(statement, values[at * width : (at + size) * width])
            at += size


def _add(periods: dict[PeriodKey, list[float]], key: PeriodKey, value: float, new: int) -> None:
    """Add one value (or, with `new` 0, the change of a replaced one) to a batch's period sums:
    a batch writes one row per hour, arm and metric, not one per exposure."""
    sums = periods.setdefault(key, [0, 0.0, 0.0])
    sums[0] += new
    sums[1] += value
    sums[2] += value * value


def _move_periods(conn: sqlite3.Connection, periods: dict[PeriodKey, list[float]]) -> None:
    conn.executemany(
        _MOVE_PERIOD, [(*key, int(count), total, sq) for key, (count, total, sq) in periods.items()]
    )


def _write_feedback(conn: sqlite3.Connection, feedback: Sequence[Feedback]) -> tuple[int, int]:
    """Store each value and move its unit's sum by the change; (applied, orphans). A value taken
    before the one stored (`Feedback.at`: another gateway's batch came first) is not applied."""
    if not feedback:
        return 0, 0
    ids = orjson.dumps(sorted({f.request_id for f in feedback})).decode()
    owners = {
        rid: (experiment_id, variant, unit, at)
        for rid, experiment_id, variant, unit, at in conn.execute(
            f"SELECT request_id, experiment_id, variant, unit, at FROM exposures WHERE {_IN_BATCH}",
            (ids,),
        )
    }
    values: dict[tuple[str, str], tuple[float, int]] = {
        (rid, metric): (value, at)
        for rid, metric, value, at in conn.execute(
            f"SELECT request_id, metric, value, at FROM feedback WHERE {_IN_BATCH}", (ids,)
        )
    }
    rows: list[tuple[str, str, float, int]] = []
    moves: list[tuple[str, str, str, str, float, int]] = []
    periods: dict[PeriodKey, list[float]] = {}
    orphans = 0
    for f in feedback:
        owner = owners.get(f.request_id)
        if owner is None:  # an orphan: no exposure stored for this request id
            orphans += 1
            continue
        experiment_id, variant, unit, at = owner
        period = (experiment_id, at[:PERIOD_CHARS], variant, f.metric)
        stored = values.get((f.request_id, f.metric))
        if stored is not None and f.at < stored[1]:  # a later value is stored: this one is stale
            continue
        previous = None if stored is None else stored[0]
        values[f.request_id, f.metric] = (f.value, f.at)  # a later one in this batch replaces it
        rows.append((f.request_id, f.metric, f.value, f.at))
        if previous is None:
            moves.append((experiment_id, variant, unit, f.metric, f.value, 1))
            _add(periods, period, f.value, 1)
        else:
            moves.append((experiment_id, variant, unit, f.metric, f.value - previous, 0))
            sums = periods.setdefault(period, [0, 0.0, 0.0])
            sums[1] += f.value - previous
            sums[2] += f.value * f.value - previous * previous
    conn.executemany(
        "INSERT INTO feedback (request_id, metric, value, at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (request_id, metric) DO UPDATE SET value = excluded.value, at = excluded.at",
        rows,
    )
    conn.executemany(_MOVE_FEEDBACK, moves)
    _move_periods(conn, periods)
    return len(rows), orphans


def _identity(path: str | Path) -> tuple[int, int] | None:
    """The file's device and inode (None when it is missing): which file a path names now."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _revision(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT value FROM revision").fetchone()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite store stopped answering: {exc}") from exc
    return int(row[0]) if row else 0


def _data_version(conn: sqlite3.Connection) -> int:
    try:
        value: int = conn.execute("PRAGMA data_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite store stopped answering: {exc}") from exc
    return value
