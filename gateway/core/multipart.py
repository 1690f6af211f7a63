"""Reading one text field of a multipart/form-data body as it streams by (RFC 7578, RFC 2046 §5.1).

Uploads (`/v1/audio/transcriptions`, `/v1/files`, ...) are streamed to the provider, never held,
but they are routed by their `model` field like JSON bodies. The scanner is fed the body's chunks
and keeps only what it needs: the tail of the data it has searched and, at most, one part's
headers and the field's value. Time is linear in the bytes fed.
"""

from __future__ import annotations

import re
from typing import Literal

_NAME = re.compile(rb"""\bname\s*=\s*(?:"([^"]*)"|([^\s;]+))""", re.IGNORECASE)
_FILENAME = re.compile(rb"\bfilename\*?\s*=", re.IGNORECASE)
_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))""", re.IGNORECASE)
MAX_HEADERS = 16 * 1024
MAX_VALUE = 4 * 1024
State = Literal["boundary", "line", "headers", "value", "done"]


def form_boundary(content_type: str) -> bytes | None:
    """The boundary of a `multipart/form-data` content type, or None for any other type."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    match = _BOUNDARY.search(content_type)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).encode("latin-1")


class FormFieldScanner:
    """Finds the value of the text field `name` in a multipart body fed chunk by chunk.

    After each `feed`, `done` tells whether the answer is known: `value` is the field's text, or
    None when the body has no such text field (or one larger than MAX_VALUE bytes, or headers
    past MAX_HEADERS: a field that big is no model name).
    """

    def __init__(self, boundary: bytes, name: str) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._name = name.encode()
        # The first delimiter may open the body without a CRLF before it.
        self._buffer = bytearray(b"\r\n")
        self._state: State = "boundary"
        self.value: str | None = None

    @property
    def done(self) -> bool:
        """The answer is known; feeding more changes nothing."""
        return self._state == "done"

    def feed(self, chunk: bytes) -> None:
        """Scan the next bytes of the body."""
        if self._state == "done":
            return
        buffer = self._buffer
        buffer += chunk
        while self._step(buffer):
            pass

    def finish(self) -> None:
        """The body ended: whatever was not found is absent."""
        self._state = "done"
        self._buffer.clear()

    def _step(self, buffer: bytearray) -> bool:
        """Advance one state if the buffer allows; False when more bytes are needed."""
        state = self._state
        if state == "boundary":
            at = buffer.find(self._delimiter)
            if at < 0:
                keep = len(self._delimiter) - 1
                if len(buffer) > keep:
                    del buffer[: len(buffer) - keep]
                return False
            del buffer[: at + len(self._delimiter)]
            self._state = "line"
            return True
        if state == "line":  # the rest of the delimiter line: "--" closes, else padding + CRLF
            if len(buffer) < 2:
                return False
            if buffer[:2] == b"--":
                self.finish()
                return False
            end = buffer.find(b"\r\n")
            if end < 0:
                return self._bounded(buffer, MAX_HEADERS)
            del buffer[: end + 2]
            self._state = "headers"
            return True
        if state == "headers":
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return self._bounded(buffer, MAX_HEADERS)
            headers = bytes(buffer[:end])
            del buffer[: end + 4]
            self._state = "value" if self._is_wanted(headers) else "boundary"
            return True
        if state == "value":
            end = buffer.find(self._delimiter)
            if end < 0:
                return self._bounded(buffer, MAX_VALUE + len(self._delimiter))
            self.value = bytes(buffer[:end]).decode("utf-8", "replace")
            self.finish()
        return False

    def _is_wanted(self, headers: bytes) -> bool:
        for line in headers.split(b"\r\n"):
            key, _, rest = line.partition(b":")
            if key.strip().lower() == b"content-disposition":
                match = _NAME.search(rest)
                found = match is not None and (match.group(1) or match.group(2)) == self._name
                return found and _FILENAME.search(rest) is None
        return False

    def _bounded(self, buffer: bytearray, limit: int) -> bool:
        if len(buffer) > limit:
            self.finish()
        return False
