"""The SQLite store's outcome writer: a child process that writes experiment outcome batches.

A gateway's recorder hands the SQLite store a batch of exposures and feedback a few times a
second. Written in the gateway's own process (a worker thread), each exposure cost about 38,000
instructions of SQLite's B-trees and Python on the core that serves calls, and the thread's
Python held the GIL the event loop waits for (benchmarks/README.md). Here the gateway only
encodes the batch (one orjson array) and pipes it to a child process, which writes it with
`SQLiteStore.write_outcomes` and answers with what it wrote: like Redis's server, the writer
runs wherever the OS has a core to spare.

Frames, both ways: a 4-byte big-endian length, then that many bytes of JSON.

    gateway -> writer   [exposures (ExposureRow arrays), feedback ([request_id, metric, value, at])]
    writer -> gateway   [exposures written, feedback applied, orphans]
                        or {"error": "unavailable" | "failed", "message": "..."}

One batch at a time. The writer ends when its input closes (the gateway closed the store, or
exited in any way); it ignores SIGINT and SIGTERM, so a Ctrl-C or a service manager's stop that
reaches the whole process group cannot cut the gateway's last flush short. A writer that dies
mid-batch fails that batch as StoreUnavailable, and the next batch starts a new one; the
recorder retries the batch whole, and writing it again changes nothing (request ids already
stored are skipped; a feedback value replaces one taken no later with the same value).

Run by the gateway as `python -m gateway.stores.sqlite_writer PATH`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import IO

import orjson

from gateway.core.outcomes import ExposureRow, Feedback
from gateway.errors import StoreUnavailable
from gateway.stores.base import Recorded

log = logging.getLogger("gateway.stores.sqlite_writer")

_LENGTH = 4
"""Bytes of a frame's length prefix (big-endian): a frame holds at most 4 GiB."""

STOP_SECONDS = 10.0
"""How long `close` waits for the writer to finish its batch and exit before killing it."""


class WriterProcess:
    """The gateway's end of one outcome writer: started on the first batch, again after it died.

    `record` and `close` block (on the pipe and the child): call them from a worker thread. Both
    are safe from several threads at once (one lock: one batch in flight).
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

        Raises StoreUnavailable when the writer cannot be started, dies, or finds the file
        unwritable (its message: what SQLite said, with the file's path); RuntimeError when the
        write failed on a bug in the writer (its traceback is on the writer's stderr).
        """
        votes = [(f.request_id, f.metric, f.value, f.at) for f in feedback]
        body = orjson.dumps((exposures, votes))
        with self._lock:
            process = self._started()
            try:
                _send(process.stdin, body)  # type: ignore[arg-type]
                reply = orjson.loads(_receive(process.stdout))  # type: ignore[arg-type]
            except (OSError, EOFError) as exc:
                code = self._end()
                raise StoreUnavailable(
                    f"SQLite store {self.path}: the outcome writer (pid {process.pid}) stopped "
                    f"during a batch (exit status {code}): {exc}. The batch is written again "
                    "by a new writer."
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
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as exc:
            raise StoreUnavailable(
                f"SQLite store {self.path}: the outcome writer cannot be started: {exc}"
            ) from exc
        self._process = process
        self._ended = weakref.finalize(self, _end, process)
        return process


def _end(process: subprocess.Popen[bytes]) -> int | None:
    """Close the writer's pipes and wait for it to exit (killed after STOP_SECONDS)."""
    for pipe in (process.stdin, process.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:  # its input's last bytes could not be flushed: it is gone already
            pass
    try:
        return process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _send(pipe: IO[bytes], body: bytes) -> None:
    pipe.write(len(body).to_bytes(_LENGTH, "big"))
    pipe.write(body)
    pipe.flush()


def _receive(pipe: IO[bytes]) -> bytes:
    """One frame's body; EOFError when the pipe ends before it does."""
    header = pipe.read(_LENGTH)
    if len(header) < _LENGTH:
        raise EOFError("the outcome writer's output ended")
    size = int.from_bytes(header, "big")
    body = pipe.read(size)
    if len(body) < size:
        raise EOFError("the outcome writer's output ended inside a reply")
    return body


def serve(path: str, requests: IO[bytes], replies: IO[bytes]) -> None:
    """The writer's loop: read a batch, write it, reply; return when `requests` ends."""
    from gateway.stores.sqlite import SQLiteStore  # the writer's side only: no import cycle

    store = SQLiteStore(path)
    while True:
        try:
            body = _receive(requests)
        except EOFError:
            return
        exposures, votes = orjson.loads(body)
        try:
            recorded = store.write_outcomes(exposures, [Feedback(*vote) for vote in votes])
            reply: object = (recorded.exposures, recorded.feedback, recorded.orphans)
        except StoreUnavailable as exc:
            reply = {"error": "unavailable", "message": exc.message}
        except Exception as exc:  # a bug: the gateway drops the batch, the writer goes on
            log.exception("writing an outcome batch failed")
            reply = {"error": "failed", "message": f"{type(exc).__name__}: {exc}"}
        _send(replies, orjson.dumps(reply))


def main() -> None:
    """`python -m gateway.stores.sqlite_writer PATH`: frames on stdin, replies on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    replies = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies' frames
    serve(sys.argv[1], sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
