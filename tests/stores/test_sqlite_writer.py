"""The SQLite store's outcome writer process: what a gateway sees when it dies, is signalled, is
left unclosed, or fails on a batch (the batches' contents are the contract suite's)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from gateway.core.outcomes import Exposure, Feedback, exposure_row
from gateway.errors import StoreUnavailable
from gateway.stores import sqlite_writer
from gateway.stores.base import Recorded
from gateway.stores.sqlite import SQLiteStore
from gateway.stores.sqlite_writer import PROTOCOL, serve
from tests.outcome_rows import record_outcomes

AT = datetime(2026, 3, 1, 14, 5, 9, tzinfo=UTC)


def exposure(request_id: str, unit: str = "u1", latency: float = 100.0) -> Exposure:
    return Exposure(request_id, "exp-1", "control", "1.0.0", unit, AT, latency, 3, 4, 0.5, 200)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, exited and not yet reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, before or while it was read
        return False
    return state != "Z"


def command_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def environment_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def wait_gone(pid: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while running(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.02)


async def requests_of(store: SQLiteStore) -> int:
    return sum(u.requests for u in await store.unit_outcomes("exp-1", "latency"))


async def test_batches_run_in_a_child_process_that_close_ends(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    assert store.writer_pid is None  # started by the first batch, not before
    await record_outcomes(store, [exposure("r1")], [])
    pid = store.writer_pid
    assert pid is not None and pid != os.getpid()
    assert command_of(pid)[1:3] == [b"-m", b"gateway.stores.sqlite_writer"]
    await store.close()
    assert store.writer_pid is None
    wait_gone(pid)


async def test_a_writer_killed_between_batches_is_replaced(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    await record_outcomes(store, [exposure("r1")], [])
    first = store.writer_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_gone(first)
    assert await record_outcomes(store, [exposure("r2")], []) == Recorded(1, 0, 0)
    assert store.writer_pid not in (None, first)
    assert await requests_of(store) == 2
    await store.close()


async def test_a_writer_killed_inside_a_batch_fails_it_and_the_retry_writes_it_once(
    tmp_path: Path,
) -> None:
    """The writer waits for a lock another connection holds; killed there, the batch fails as
    StoreUnavailable (the recorder keeps it and retries), and the retry writes each row once."""
    path = tmp_path / "g.db"
    store = SQLiteStore(path)
    await record_outcomes(store, [exposure("r1")], [])
    pid = store.writer_pid
    assert pid is not None
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the writer's next batch waits here (busy timeout 10 s)
    batch = [exposure("r2"), exposure("r3", "u2")]
    pending = record_outcomes(store, batch, [Feedback("r1", "user_satisfaction", 0.5, at=1)])
    task = asyncio.ensure_future(pending)
    await asyncio.sleep(0.3)
    assert not task.done()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StoreUnavailable, match=f"outcome writer \\(pid {pid}\\) stopped"):
        await task
    holder.execute("ROLLBACK")
    holder.close()
    again = await record_outcomes(store, batch, [Feedback("r1", "user_satisfaction", 0.5, at=1)])
    assert again == Recorded(2, 1, 0)
    assert await record_outcomes(store, batch, []) == Recorded(0, 0, 0)
    assert await requests_of(store) == 3
    await store.close()


async def test_ctrl_c_and_sigterm_leave_the_writer_to_finish_the_last_flush(
    tmp_path: Path,
) -> None:
    """Signals that reach a whole process group (a terminal's Ctrl-C, a service manager's stop)
    do not end the writer: the gateway's shutdown flush still has it. Its input closing does."""
    store = SQLiteStore(tmp_path / "g.db")
    await record_outcomes(store, [exposure("r1")], [])
    pid = store.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert await record_outcomes(store, [exposure("r2")], []) == Recorded(1, 0, 0)
    assert store.writer_pid == pid
    await store.close()
    wait_gone(pid)


async def test_a_store_dropped_unclosed_leaves_no_writer_behind(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    await record_outcomes(store, [exposure("r1")], [])
    pid = store.writer_pid
    assert pid is not None
    del store
    gc.collect()
    wait_gone(pid)


async def test_an_unwritable_file_is_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "missing-folder" / "g.db")
    with pytest.raises(StoreUnavailable, match="cannot be opened"):
        await record_outcomes(store, [exposure("r1")], [])
    await store.close()


def frame(value: object) -> bytes:
    body = orjson.dumps(value)
    return len(body).to_bytes(4, "big") + body


def replies(data: bytes) -> list[object]:
    found = []
    while data:
        size = int.from_bytes(data[:4], "big")
        found.append(orjson.loads(data[4 : 4 + size]))
        data = data[4 + size :]
    return found


def test_a_batch_that_fails_on_a_bug_is_answered_and_the_next_is_written(
    tmp_path: Path,
) -> None:
    """The writer's loop (in this process, on real pipes): hello first; a malformed batch (a
    feedback value two fields short) gets a `failed` reply naming the error, the next batch is
    written, and the loop returns when its input ends."""
    good = exposure_row(exposure("r1"))
    requests_out, requests_in = os.pipe()
    replies_out, replies_in = os.pipe()
    os.write(requests_in, frame([[good], [["r1", "task_completion"]]]) + frame([[good], []]))
    os.close(requests_in)
    serve(str(tmp_path / "g.db"), requests_out, replies_in)
    os.close(replies_in)
    hello, failed, written = replies(os.read(replies_out, 1 << 16))
    assert hello == {"protocol": PROTOCOL}
    assert isinstance(failed, dict) and failed["error"] == "failed"
    assert "TypeError" in failed["message"]
    assert written == [1, 0, 0]
    for fd in (requests_out, replies_out):
        os.close(fd)


async def test_a_hung_writer_is_stopped_and_its_batch_written_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that answers nothing (stopped with SIGSTOP) fails the batch within
    REPLY_SECONDS, is killed (nothing left behind), and a new writer writes the batch."""
    monkeypatch.setattr(sqlite_writer, "REPLY_SECONDS", 1.0)
    store = SQLiteStore(tmp_path / "g.db")
    await record_outcomes(store, [exposure("r1")], [])
    hung = store.writer_pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    started = time.monotonic()
    hang = f"\\(pid {hung}\\) did not answer a batch within 1 s"
    with pytest.raises(StoreUnavailable, match=hang):
        await record_outcomes(store, [exposure("r2")], [])
    assert time.monotonic() - started < 5
    wait_gone(hung)
    assert await record_outcomes(store, [exposure("r2")], []) == Recorded(1, 0, 0)
    assert await requests_of(store) == 2
    await store.close()


async def test_the_writer_has_a_process_group_and_none_of_the_gateways_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal to the gateway's process group (a terminal's Ctrl-C) does not reach the writer,
    even while it starts (before it ignores SIGINT itself); provider keys and admin tokens in the
    gateway's environment are not in the writer's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-writer-must-not-see")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKENS", "admin-writer-must-not-see")
    store = SQLiteStore(tmp_path / "g.db")
    await record_outcomes(store, [exposure("r1")], [])
    pid = store.writer_pid
    assert pid is not None
    assert os.getpgid(pid) == pid != os.getpgid(0)
    environment = environment_of(pid)
    assert b"writer-must-not-see" not in environment
    assert b"PATH=" in environment
    await store.close()


async def test_a_writer_from_changed_code_on_disk_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that speaks another protocol than the running gateway (its code was replaced
    on disk) writes nothing: StoreUnavailable says to restart the gateway."""
    monkeypatch.setattr(sqlite_writer, "PROTOCOL", PROTOCOL + 1)
    store = SQLiteStore(tmp_path / "g.db")
    with pytest.raises(StoreUnavailable, match="Restart the gateway"):
        await record_outcomes(store, [exposure("r1")], [])
    assert store.writer_pid is None
    monkeypatch.setattr(sqlite_writer, "PROTOCOL", PROTOCOL)
    assert await record_outcomes(store, [exposure("r1")], []) == Recorded(1, 0, 0)
    await store.close()
