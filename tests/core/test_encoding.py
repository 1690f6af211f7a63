"""Content codings: decoding a copy piece by piece, and re-encoding an edited stream."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from gateway.core.encoding import Recoder, codec_of

TEXT = b"data: " + b'{"choices":[{"delta":{"content":"hello"}}]}\n\n' * 50

ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}
DECODERS = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_a_body_split_anywhere_decodes_to_its_text(codec: str) -> None:
    """The decoded copy of a compressed body fed in small pieces is its plain text."""
    body = ENCODERS[codec](TEXT)
    recoder = Recoder(codec)
    assert b"".join(recoder.decode(body[i : i + 7]) for i in range(0, len(body), 7)) == TEXT


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_edited_pieces_are_decodable_at_once_and_in_the_end(codec: str) -> None:
    """Each encoded piece is flushed (a client reads it at once); the whole is a valid body."""
    recoder = Recoder(codec)
    first = recoder.encode(b"data: one\n\n")
    assert DECODERS[codec](first + recoder.finish()) == b"data: one\n\n"
    recoder = Recoder(codec)
    whole = recoder.encode(b"a\n\n") + recoder.encode(b"") + recoder.encode(b"b\n\n")
    assert DECODERS[codec](whole + recoder.finish()) == b"a\n\nb\n\n"


def test_raw_deflate_is_read_too() -> None:
    """Some servers send raw deflate as "deflate"; it is recognised by its first byte."""
    raw = zlib.compressobj(wbits=-15)
    body = raw.compress(TEXT) + raw.flush()
    assert Recoder("deflate").decode(body) == TEXT


@pytest.mark.parametrize(
    ("header", "codec"),
    [
        (None, None),
        ("identity", None),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("deflate", "deflate"),
    ],
)
def test_codec_of(header: str | None, codec: str | None) -> None:
    """Content-Encoding names map to the codec that undoes them."""
    assert codec_of(header) == codec


@pytest.mark.parametrize("header", ["compress", "gzip, br", "xz"])
def test_unreadable_codings_are_refused(header: str) -> None:
    """A coding the gateway cannot read (or a chain of them) raises ValueError."""
    with pytest.raises(ValueError, match="unreadable"):
        codec_of(header)
