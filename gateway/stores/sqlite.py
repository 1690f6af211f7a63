"""The embedded store: one SQLite file, safe for several processes on one host (WAL, IMMEDIATE)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.core.model import AuditEntry, Experiment, PromptState, RegistrySnapshot
from gateway.core.registry import Change
from gateway.errors import StoreUnavailable
from gateway.stores import codec
from gateway.stores.base import Plan

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version TEXT NOT NULL, doc BLOB NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS activations (name TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, prompt_name TEXT NOT NULL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS experiments_by_prompt ON experiments (prompt_name);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, prompt_name TEXT NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER);
INSERT OR IGNORE INTO revision VALUES (1, 0);
"""


class SQLiteStore:
    """A Store on a SQLite file. Blocking calls run in a worker thread, one connection each."""

    def __init__(self, path: str | Path, *, poll_interval: float = 0.2) -> None:
        self.path = str(path)
        self.poll_interval = poll_interval
        self._ready = False

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
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
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
        # Connections live for one call each; nothing stays open.
        return None

    async def snapshot(self) -> RegistrySnapshot:
        return await asyncio.to_thread(self._snapshot)

    def _snapshot(self) -> RegistrySnapshot:
        with self._connect() as conn:
            conn.execute("BEGIN")  # one read transaction: a consistent view of every table
            revision = conn.execute("SELECT value FROM revision").fetchone()[0]
            activations = dict(conn.execute("SELECT name, doc FROM activations").fetchall())
            versions: dict[str, list[bytes]] = {}
            for name, doc in conn.execute("SELECT name, doc FROM versions"):
                versions.setdefault(name, []).append(doc)
            experiments: dict[str, list[Experiment]] = {}
            for name, doc in conn.execute("SELECT prompt_name, doc FROM experiments"):
                experiments.setdefault(name, []).append(codec.load_experiment(doc))
            conn.execute("COMMIT")
        prompts = {
            name: codec.load_state(name, docs, activations.get(name), experiments.get(name, []))
            for name, docs in versions.items()
        }
        return RegistrySnapshot(prompts, str(revision))

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
        return codec.load_state(name, docs, row[0] if row else None, experiments)

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

    async def changes(self) -> AsyncIterator[None]:
        # PRAGMA data_version changes on one connection whenever another connection commits,
        # so a single long-lived connection polls it cheaply without reading any table.
        conn = await asyncio.to_thread(self._watch_connection)
        try:
            last = await asyncio.to_thread(_data_version, conn)
            yield None
            while True:
                await asyncio.sleep(self.poll_interval)
                current = await asyncio.to_thread(_data_version, conn)
                if current != last:
                    last = current
                    yield None
        finally:
            conn.close()

    def _watch_connection(self) -> sqlite3.Connection:
        with self._connect():  # creates the schema on first use
            pass
        if not Path(self.path).exists():
            raise StoreUnavailable(f"SQLite store {self.path} does not exist.")
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)


def _data_version(conn: sqlite3.Connection) -> int:
    try:
        value: int = conn.execute("PRAGMA data_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite store stopped answering: {exc}") from exc
    return value
