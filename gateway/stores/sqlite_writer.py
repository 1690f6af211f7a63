"""The SQLite store's outcome writer: a child process that writes experiment outcome batches.

A gateway's recorder hands the SQLite store a batch of exposures and feedback a few times a
second. Written in the gateway's own process (a worker thread), each exposure cost about 38,000
instructions of SQLite's B-trees and Python on the core that serves calls, and the thread's
Python held the GIL the event loop waits for (benchmarks/README.md). Here the gateway only
encodes the batch (one orjson array) and pipes it to a child process, which writes it with
`SQLiteStore.write_outcomes` and answers with what it wrote: like Redis's server, the writer
runs wherever the OS has a core to spare.

Frames, both ways: a 4-byte big-endian length, then that many bytes of JSON.

    writer -> gateway   {"protocol": PROTOCOL}, once, when it has started
    gateway -> writer   [exposures (ExposureRow arrays), feedback ([request_id, metric, value, at])]
    writer -> gateway   [exposures written, feedback applied, orphans]
                        or {"error": "unavailable" | "failed", "message": "..."}

One batch at a time. The writer ends when its input closes (the gateway closed the store, or
exited in any way). It runs in a process group of its own and ignores SIGINT and SIGTERM, so a
Ctrl-C or a service manager's stop that reaches the gateway's group cannot cut the gateway's
last flush short. A writer that dies mid-batch, or answers no batch within REPLY_SECONDS (it
is then killed), fails that batch as StoreUnavailable, and the next batch starts a new one; the
recorder retries the batch whole, and writing it again changes nothing (request ids already
stored are skipped; a feedback value replaces one taken no later with the same value). A writer
started from code on disk that speaks another protocol (the gateway's code was changed under
it) is refused with a message saying to restart the gateway.

Run by the gateway as `python -m gateway.stores.sqlite_writer PATH`.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import IO

import orjson

from gateway.core.outcomes import ExposureRow, Feedback
from gateway.errors import StoreUnavailable
from gateway.stores.base import Recorded

log = logging.getLogger("gateway.stores.sqlite_writer")

PROTOCOL = 1
"""The frames' version: a writer answers the gateway's batches only when both say the same."""

REPLY_SECONDS = 15.0
"""How long the writer may take to answer a batch before it is taken as hung and killed.
SQLite waits up to 10 s for another process's write lock (its busy timeout), then answers
`unavailable`; a batch of 5,000 exposures is written in well under a second."""

START_SECONDS = 15.0
"""How long the writer may take to start (0.25 s on an idle machine: Python and its imports)."""

STOP_SECONDS = 10.0
"""How long `close` waits for the writer to exit once its input closed, before killing it."""

_LENGTH = 4
"""Bytes of a frame's length prefix (big-endian): a frame holds at most 4 GiB."""

_ENVIRONMENT = ("PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "HOME", "LANG", "TZ", "TMPDIR")
_ENVIRONMENT_PREFIXES = ("PYTHON", "LC_", "SQLITE_")
"""What the writer inherits of the gateway's environment: what Python, its locale and SQLite's
temporary files need, none of the gateway's secrets (provider keys, admin tokens)."""


class WriterProcess:
    """The gateway's end of one outcome writer: started on the first batch, again after it died.

    `record` and `close` block (on the pipes and the child, each wait bounded): call them from a
    worker thread. Both are safe from several threads at once (one lock: one batch in flight).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._process: subprocess.Popen[bytes] | None = None
        self._ended: weakref.finalize[[subprocess.Popen[bytes]], WriterProcess] | None = None
        """Ends the running writer once: at `close`, after it failed, or when this object is
        collected unclosed (its input then closes and it exits, no process or pipe left over)."""
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The running writer's process id (None before the first batch and after `close`)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def record(self, exposures: Sequence[ExposureRow], feedback: Sequence[Feedback]) -> Recorded:
        """Write one checked batch (`codec.check_outcomes`) in the writer; what it wrote.

        Raises StoreUnavailable when the writer cannot be started, dies, hangs, or finds the
        file unwritable (its message: what SQLite said, with the file's path); RuntimeError
        when the write failed on a bug in the writer (its traceback is on the writer's stderr).
        """
        votes = [(f.request_id, f.metric, f.value, f.at) for f in feedback]
        body = orjson.dumps((exposures, votes))
        with self._lock:
            process = self._started()
            deadline = time.monotonic() + REPLY_SECONDS
            try:
                _send(_fd(process.stdin), body, deadline)
                reply = orjson.loads(_receive(_fd(process.stdout), deadline))
            except TimeoutError as exc:
                process.kill()
                self._end()
                raise StoreUnavailable(
                    f"SQLite store {self.path}: the outcome writer (pid {process.pid}) did not "
                    f"answer a batch within {REPLY_SECONDS:g} s and was stopped. The batch is "
                    "written again by a new writer."
                ) from exc
            except (OSError, EOFError) as exc:
                code = self._end()
                raise StoreUnavailable(
                    f"SQLite store {self.path}: the outcome writer (pid {process.pid}) stopped "
                    f"during a batch (exit status {code}). The batch is written again by a new "
                    "writer."
                ) from exc
        if isinstance(reply, list):
            return Recorded(exposures=reply[0], feedback=reply[1], orphans=reply[2])
        if reply["error"] == "unavailable":
            raise StoreUnavailable(reply["message"])
        raise RuntimeError(f"the SQLite store's outcome writer failed: {reply['message']}")

    def close(self) -> None:
        """End the writer after the batch in flight: its input closes, it exits."""
        with self._lock:
            self._end()

    def _end(self) -> int | None:
        ended, self._ended, self._process = self._ended, None, None
        code: int | None = ended() if ended is not None else None
        return code

    def _started(self) -> subprocess.Popen[bytes]:
        process = self._process
        if process is not None and process.poll() is None:
            return process
        if process is not None:  # it died between batches
            log.warning(
                "the SQLite outcome writer (pid %d) exited with status %s; starting a new one",
                process.pid,
                process.returncode,
            )
            self._end()
        command = [sys.executable, "-m", "gateway.stores.sqlite_writer", self.path]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
                env=_writer_environment(os.environ),
                process_group=0,  # the gateway's group's signals (a Ctrl-C) do not reach it
            )
        except OSError as exc:
            raise StoreUnavailable(
                f"SQLite store {self.path}: the outcome writer cannot be started: {exc}"
            ) from exc
        self._process = process
        self._ended = weakref.finalize(self, _end, process)
        for end in (process.stdin, process.stdout):
            os.set_blocking(_fd(end), False)
        try:
            hello = orjson.loads(_receive(_fd(process.stdout), time.monotonic() + START_SECONDS))
        except (OSError, EOFError, TimeoutError, orjson.JSONDecodeError) as exc:
            process.kill()
            code = self._end()
            raise StoreUnavailable(
                f"SQLite store {self.path}: the outcome writer did not start (exit status "
                f"{code}; its error, if any, is in the log above)."
            ) from exc
        if hello != {"protocol": PROTOCOL}:
            self._end()
            raise StoreUnavailable(
                f"SQLite store {self.path}: the outcome writer on disk speaks {hello!r}, this "
                f"gateway protocol {PROTOCOL}: the gateway's code was changed while it ran. "
                "Restart the gateway."
            )
        return process


def _writer_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in environ.items()
        if key in _ENVIRONMENT or key.startswith(_ENVIRONMENT_PREFIXES)
    }


def _fd(pipe: IO[bytes] | None) -> int:
    """The file descriptor of one of the writer's pipes (Popen made both: never None here)."""
    assert pipe is not None
    return pipe.fileno()


def _end(process: subprocess.Popen[bytes]) -> int | None:
    """Close the writer's pipes and wait for it to exit (killed after STOP_SECONDS)."""
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
    try:
        return process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _send(fd: int, body: bytes, deadline: float | None = None) -> None:
    """Write one frame; with a deadline, `fd` is non-blocking and TimeoutError ends the wait."""
    data = memoryview(len(body).to_bytes(_LENGTH, "big") + body)
    while data:
        _wait(fd, select.POLLOUT, deadline)
        data = data[os.write(fd, data) :]


def _receive(fd: int, deadline: float | None = None) -> bytes:
    """One frame's body; EOFError when the pipe ends before it does (deadline: as `_send`)."""
    size = int.from_bytes(_read(fd, _LENGTH, deadline), "big")
    return _read(fd, size, deadline)


def _read(fd: int, size: int, deadline: float | None) -> bytes:
    data = bytearray()
    while len(data) < size:
        _wait(fd, select.POLLIN, deadline)
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the pipe ended inside a frame" if data else "the pipe ended")
        data += chunk
    return bytes(data)


def _wait(fd: int, event: int, deadline: float | None) -> None:
    if deadline is None:  # a blocking descriptor (the writer's own ends)
        return
    poller = select.poll()
    poller.register(fd, event)
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not poller.poll(remaining * 1000):
        raise TimeoutError


def serve(path: str, requests: int, replies: int) -> None:
    """The writer's loop on two blocking descriptors: say hello, then read a batch, write it,
    reply; return when `requests` ends (or the gateway is gone when a reply is sent)."""
    from gateway.stores.sqlite import SQLiteStore  # the writer's side only: no import cycle

    store = SQLiteStore(path)
    reply: object = {"protocol": PROTOCOL}
    while True:
        try:
            _send(replies, orjson.dumps(reply))
            body = _receive(requests)
        except (EOFError, BrokenPipeError):
            return
        exposures, votes = orjson.loads(body)
        try:
            recorded = store.write_outcomes(exposures, [Feedback(*vote) for vote in votes])
            reply = (recorded.exposures, recorded.feedback, recorded.orphans)
        except StoreUnavailable as exc:
            reply = {"error": "unavailable", "message": exc.message}
        except Exception as exc:  # a bug: the gateway drops the batch, the writer goes on
            log.exception("writing an outcome batch failed")
            reply = {"error": "failed", "message": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    """`python -m gateway.stores.sqlite_writer PATH`: frames on stdin, replies on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt frames
    serve(sys.argv[1], sys.stdin.fileno(), replies)


if __name__ == "__main__":
    main()
