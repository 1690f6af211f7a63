"""Finding the model field of a multipart upload as it streams by."""

from __future__ import annotations

import pytest

from gateway.core.multipart import FormFieldScanner, form_boundary

BOUNDARY = b"----formdata-7d93"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"Content-Disposition: {disposition}\r\n"
    if filename:
        head += "Content-Type: audio/mpeg\r\n"
    return b"--" + BOUNDARY + b"\r\n" + head.encode() + b"\r\n" + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def scan(data: bytes, size: int) -> FormFieldScanner:
    scanner = FormFieldScanner(BOUNDARY, "model")
    for i in range(0, len(data), size):
        scanner.feed(data[i : i + size])
        if scanner.done:
            break
    else:
        scanner.finish()
    return scanner


AUDIO = bytes(range(256)) * 40 + b"\r\n--not-the-boundary\r\n"


@pytest.mark.parametrize("size", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize(
    "data",
    [
        body(part("model", b"whisper-1"), part("file", AUDIO, "a.mp3")),
        body(part("file", AUDIO, "a.mp3"), part("model", b"whisper-1")),
        body(part("language", b"de"), part("file", b"", "empty.mp3"), part("model", b"whisper-1")),
    ],
    ids=["model-first", "file-first (openai-node)", "empty-file-between"],
)
def test_the_model_field_is_found_wherever_it_is(data: bytes, size: int) -> None:
    """The value is found before or after the file part, fed in any piece size."""
    scanner = scan(data, size)
    assert scanner.done and scanner.value == "whisper-1"


def test_a_body_without_the_field_has_none() -> None:
    """No model field: done at the closing delimiter with no value."""
    scanner = scan(body(part("purpose", b"batch"), part("file", AUDIO, "x.jsonl")), 13)
    assert scanner.done and scanner.value is None


def test_a_file_part_named_model_is_not_the_field() -> None:
    """A part with a filename is a file, even when it is called model."""
    scanner = scan(body(part("model", b"xyz", "model.bin")), 5)
    assert scanner.value is None


def test_the_first_boundary_may_have_a_preamble() -> None:
    """Text before the first delimiter is skipped (RFC 2046 preamble)."""
    scanner = scan(b"preamble\r\n" + body(part("model", b"gpt-4o-transcribe")), 3)
    assert scanner.value == "gpt-4o-transcribe"


def test_a_huge_value_is_not_a_model_name() -> None:
    """A text field past the bound gives up instead of holding it."""
    scanner = scan(body(part("model", b"x" * 100_000)), 1000)
    assert scanner.done and scanner.value is None


def test_memory_stays_bounded_while_skipping_a_file() -> None:
    """Skipping a large file part keeps only a delimiter's length of it."""
    scanner = FormFieldScanner(BOUNDARY, "model")
    scanner.feed(
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
    )
    for _ in range(100):
        scanner.feed(b"\0" * 65536)
        assert len(scanner._buffer) < 64


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('multipart/form-data; charset=utf-8; boundary="a b"', b"a b"),
        ("Multipart/Form-Data;boundary=x", b"x"),
        ("application/json", None),
        ("multipart/form-data", None),
    ],
)
def test_form_boundary(content_type: str, boundary: bytes | None) -> None:
    """The boundary parameter of a multipart/form-data content type, quoted or not."""
    assert form_boundary(content_type) == boundary
