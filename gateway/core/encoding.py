"""Compressed answers: reading a decoded copy, and compressing again what the gateway changed.

The gateway asks providers for `identity`, but some compress anyway. The client must still get a
live, compressed stream; the gateway reads usage from a decoded copy. Only when it must remove
bytes it added itself (the usage chunk a client did not ask for) does it compress the edited
stream again, flushing after every piece so that nothing waits in the compressor (RFC 1950-1952;
zlib's Z_SYNC_FLUSH).
"""

from __future__ import annotations

import zlib

# zlib window bits: 16 + 15 reads and writes the gzip wrapper, 15 the zlib wrapper (HTTP's
# "deflate"), -15 raw deflate (which some servers send as "deflate").
_GZIP, _ZLIB, _RAW = 31, 15, -15
CODECS = frozenset({"gzip", "x-gzip", "deflate"})


def codec_of(content_encoding: str | None) -> str | None:
    """The content coding to undo: `gzip` or `deflate`; None for identity. Raises ValueError
    for a coding the gateway cannot read (br, zstd, a chain of codings)."""
    if content_encoding is None:
        return None
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in CODECS:
        raise ValueError(f"unreadable content coding {content_encoding!r}")
    return "deflate" if coding == "deflate" else "gzip"


class Recoder:
    """Decodes a compressed body piece by piece, and encodes edited pieces the same way."""

    def __init__(self, codec: str) -> None:
        self._codec = codec
        self._decoder = zlib.decompressobj(_GZIP if codec == "gzip" else _ZLIB)
        self._encoder = zlib.compressobj(6, zlib.DEFLATED, _GZIP if codec == "gzip" else _ZLIB)
        self._sniffed = codec == "gzip"

    def decode(self, piece: bytes) -> bytes:
        """The decoded bytes of the next piece. Raises zlib.error on a corrupt body."""
        if not self._sniffed and piece:
            self._sniffed = True
            # "deflate" should be the zlib wrapper; fall back to raw deflate when it is not.
            if piece[0] & 0x0F != zlib.DEFLATED:
                self._decoder = zlib.decompressobj(_RAW)
                self._encoder = zlib.compressobj(6, zlib.DEFLATED, _RAW)
        return self._decoder.decompress(piece)

    def encode(self, plain: bytes) -> bytes:
        """`plain` compressed and flushed, so the client can decode it at once."""
        if not plain:
            return b""
        return self._encoder.compress(plain) + self._encoder.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        """The end of the compressed stream (gzip's trailer)."""
        return self._encoder.flush(zlib.Z_FINISH)
