"""Compressed answers: reading a decoded copy, and compressing again what the gateway changed.

The gateway asks providers for `identity`, but some compress anyway. The client must still get a
live, compressed stream; the gateway reads usage from a decoded copy. Only when it must remove
bytes it added itself (the usage chunk a client did not ask for) does it compress the edited
stream again, flushing after every piece so that nothing waits in the compressor. Codings: gzip
and deflate (RFC 1950-1952, zlib), br (RFC 7932, the `brotli` package) and zstd (RFC 8878, the
`zstandard` package): the codings HTTP servers send.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli
import zstandard

# zlib window bits: 16 + 15 reads and writes the gzip wrapper, 15 the zlib wrapper (HTTP's
# "deflate"), -15 raw deflate (which some servers send as "deflate").
_GZIP, _ZLIB, _RAW = 31, 15, -15
CODECS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate", "br": "br", "zstd": "zstd"}

DecodeError = (zlib.error, brotli.error, zstandard.ZstdError)
"""What decoding a corrupt body raises."""


def codec_of(content_encoding: str | None) -> str | None:
    """The content coding to undo: `gzip`, `deflate`, `br` or `zstd`; None for identity.

    Raises ValueError for a coding the gateway cannot read (an unknown one, or a chain).
    """
    if content_encoding is None:
        return None
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in CODECS:
        raise ValueError(f"unreadable content coding {content_encoding!r}")
    return CODECS[coding]


class _Stream(Protocol):
    def decode(self, piece: bytes) -> bytes: ...

    def encode(self, plain: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Recoder:
    """Decodes a compressed body piece by piece, and encodes edited pieces the same way."""

    def __init__(self, codec: str) -> None:
        self._stream: _Stream = (
            _Brotli() if codec == "br" else _Zstd() if codec == "zstd" else _Zlib(codec)
        )

    def decode(self, piece: bytes) -> bytes:
        """The decoded bytes of the next piece. Raises one of DecodeError on a corrupt body."""
        return self._stream.decode(piece)

    def encode(self, plain: bytes) -> bytes:
        """`plain` compressed and flushed, so the client can decode it at once."""
        return self._stream.encode(plain) if plain else b""

    def finish(self) -> bytes:
        """The end of the compressed stream (gzip's trailer, brotli's and zstd's last block)."""
        return self._stream.finish()


class _Zlib:
    def __init__(self, codec: str) -> None:
        bits = _GZIP if codec == "gzip" else _ZLIB
        self._decoder = zlib.decompressobj(bits)
        self._encoder = zlib.compressobj(6, zlib.DEFLATED, bits)
        self._sniffed = codec == "gzip"

    def decode(self, piece: bytes) -> bytes:
        if not self._sniffed and piece:
            self._sniffed = True
            # "deflate" should be the zlib wrapper; fall back to raw deflate when it is not.
            if piece[0] & 0x0F != zlib.DEFLATED:
                self._decoder = zlib.decompressobj(_RAW)
                self._encoder = zlib.compressobj(6, zlib.DEFLATED, _RAW)
        return self._decoder.decompress(piece)

    def encode(self, plain: bytes) -> bytes:
        return self._encoder.compress(plain) + self._encoder.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._encoder.flush(zlib.Z_FINISH)


class _Brotli:
    def __init__(self) -> None:
        self._decoder = brotli.Decompressor()
        self._encoder = brotli.Compressor()

    def decode(self, piece: bytes) -> bytes:
        return bytes(self._decoder.process(piece))

    def encode(self, plain: bytes) -> bytes:
        return bytes(self._encoder.process(plain) + self._encoder.flush())

    def finish(self) -> bytes:
        return bytes(self._encoder.finish())


class _Zstd:
    def __init__(self) -> None:
        self._decoder = zstandard.ZstdDecompressor().decompressobj()
        self._encoder = zstandard.ZstdCompressor().compressobj()

    def decode(self, piece: bytes) -> bytes:
        return bytes(self._decoder.decompress(piece))

    def encode(self, plain: bytes) -> bytes:
        compressed = self._encoder.compress(plain)
        return bytes(compressed + self._encoder.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))

    def finish(self) -> bytes:
        return bytes(self._encoder.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
