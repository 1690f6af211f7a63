"""Request bodies that are not JSON (multipart uploads, files, audio): streamed, never held whole.

An `Upload` hands the client's body to the provider piece by piece as it arrives, up to
`server.max_upload_bytes`. A multipart body is routed by its `model` field: the pieces before
that field are kept in a spooled temporary file (memory up to SPOOL_MEMORY, then disk) and sent
first, so openai-node, which sends the file before the model, is routed like openai-python. A
client that hangs up or sends too much raises, which aborts the provider request: an incomplete
upload is never forwarded as complete.

Only the endpoints whose form carries a model (MODEL_FORMS) are searched, and at most SPOOL_LIMIT
bytes: `/files` and `/uploads` have no model and go to the default provider at once.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any

from gateway.core.multipart import FormFieldScanner
from gateway.errors import ClientClosedRequest, PayloadTooLarge

Receive = Callable[[], Awaitable[dict[str, Any]]]
SPOOL_MEMORY = 1 << 20
SPOOL_LIMIT = 64 << 20
"""Most of an upload held while looking for its model field (OpenAI takes 25 MB of audio)."""
READ_SIZE = 1 << 16
# The multipart endpoints whose form has a `model` field; others (files, uploads) have none.
MODEL_FORMS = frozenset(
    {
        "/audio/transcriptions",
        "/audio/translations",
        "/images/edits",
        "/images/variations",
        "/videos",
    }
)


class Upload:
    """The client's request body as an async stream of pieces, with an optional field lookup."""

    def __init__(
        self, receive: Receive, *, limit: int, on_complete: Callable[[], None] | None = None
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._on_complete = on_complete
        self._size = 0
        self._ended = False
        self._spool: IO[bytes] | None = None

    async def find_field(self, boundary: bytes, name: str) -> str | None:
        """The text field `name` of this multipart body, read before anything is sent.

        The pieces read to find it are kept and come first out of `pieces()`; past SPOOL_LIMIT
        bytes the search stops (None), so no upload is held whole.
        """
        scanner = FormFieldScanner(boundary, name)
        # Not a `with`: the spool outlives this method, and pieces() closes it once replayed.
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        self._spool = spool
        try:
            while not scanner.done:
                piece = await self._next()
                if piece is None:
                    scanner.finish()
                    break
                spool.write(piece)
                scanner.feed(piece)
                if self._size > SPOOL_LIMIT:
                    break
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return scanner.value

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body, from its first byte, as it arrives. Raises ClientClosedRequest when the
        client hangs up before the end, PayloadTooLarge past the limit."""
        spool, self._spool = self._spool, None
        if spool is not None:
            try:
                while held := spool.read(READ_SIZE):
                    yield held
            finally:
                spool.close()
        while (piece := await self._next()) is not None:
            if piece:
                yield piece

    async def _next(self) -> bytes | None:
        if self._ended:
            return None
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientClosedRequest(
                f"The client hung up after {self._size} bytes of its upload; nothing was "
                "forwarded as complete."
            )
        piece: bytes = message.get("body", b"")
        self._size += len(piece)
        if self._size > self._limit:
            raise PayloadTooLarge(
                f"The upload is over the gateway's limit of {self._limit} bytes "
                "(server.max_upload_bytes)."
            )
        if not message.get("more_body"):
            self._ended = True
            if self._on_complete is not None:
                self._on_complete()
        return piece
