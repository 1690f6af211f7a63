"""The SSE tap, as playbooks: feed chunks, check what is forwarded and what was learned."""

from __future__ import annotations

import orjson
import pytest

from gateway.core.sse import (
    _FINISH_SET,
    HELD_CHUNKS,
    HELD_MAX,
    DeferredTap,
    Outcome,
    SSETap,
    Usage,
    event_end,
    read_body,
    responses_finish_reason,
    usage_from,
)


def chunk(content: str | None = None, finish: str | None = None, usage: bool = True) -> bytes:
    delta = {} if content is None else {"content": content}
    doc = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        doc["usage"] = None
    return b"data: " + orjson.dumps(doc) + b"\n\n"


USAGE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],'
    b'"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\n\n'
)
DONE = b"data: [DONE]\n\n"


def test_without_stripping_every_chunk_passes_at_once() -> None:
    """Each fed chunk is returned as it is, even when it splits an event."""
    tap = SSETap(orjson.loads)
    stream = chunk("Hel") + chunk("lo") + chunk(finish="stop") + USAGE + DONE
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    assert [tap.feed(p) for p in pieces] == pieces
    assert tap.finish() == b""
    assert tap.outcome.usage == Usage(7, 2)
    assert tap.outcome.finish_reasons == ["stop"]
    assert (tap.outcome.response_id, tap.outcome.response_model) == ("c1", "gpt-4o-mini")


def test_stripping_removes_the_usage_chunk_and_usage_nulls() -> None:
    """With strip_usage the client gets the stream as if it never asked for usage."""
    tap = SSETap(orjson.loads, strip_usage=True)
    out = tap.feed(chunk("Hi")) + tap.feed(chunk(finish="stop")) + tap.feed(USAGE + DONE)
    out += tap.finish()
    assert out == chunk("Hi", usage=False) + chunk(finish="stop", usage=False) + DONE
    assert tap.outcome.usage == Usage(7, 2)


def test_stripping_holds_a_partial_event_until_it_completes() -> None:
    """A half event is held back, then forwarded whole; nothing is lost."""
    tap = SSETap(orjson.loads, strip_usage=True)
    event = chunk("Hi", usage=False)
    assert tap.feed(event[:10]) == b""
    assert tap.feed(event[10:]) == event


@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("size", [1, 5, 64, 10_000])
def test_whole_events_in_one_chunk_read_as_when_split(strip: bool, size: int) -> None:
    """A chunk of whole LF-ended events (read with one split) gives what the same bytes give
    fed in pieces (read event by event through the buffer): output, usage, counts."""
    stream = chunk("Hel") + b"\n" + chunk("lo") + chunk(finish="stop") + USAGE + DONE + b": c\n"
    whole = SSETap(orjson.loads, strip_usage=strip, keep_text=True)
    split = SSETap(orjson.loads, strip_usage=strip, keep_text=True)
    out_whole = whole.feed(stream) + whole.finish()
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    out_split = b"".join(split.feed(p) for p in pieces) + split.finish()
    assert out_whole == out_split
    assert whole.outcome == split.outcome
    assert whole.outcome.usage == Usage(7, 2)
    assert whole.outcome.output_text == ["Hel", "lo"]
    assert whole.outcome.content_chunks == 0  # counted, then let go: the usage came
    assert whole.events == split.events


def test_responses_stream_usage_from_the_completed_event() -> None:
    """Responses API streams report usage and status in response.completed."""
    tap = SSETap(orjson.loads, keep_text=True)
    tap.feed(
        b'event: response.created\ndata: {"type":"response.created","response":'
        b'{"id":"resp_1","model":"gpt-4o","status":"in_progress","usage":null}}\n\n'
    )
    tap.feed(
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"delta":"Hi"}\n\n'
    )
    tap.feed(
        b'event: response.completed\ndata: {"type":"response.completed","response":'
        b'{"id":"resp_1","model":"gpt-4o","status":"completed",'
        b'"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
    )
    assert tap.outcome.usage == Usage(5, 1)
    assert tap.outcome.finish_reasons == ["stop"]
    assert tap.outcome.output_text == ["Hi"]


def test_crlf_events_and_comments_are_understood() -> None:
    """CRLF line ends and SSE comments pass through the parser."""
    tap = SSETap(orjson.loads, strip_usage=True)
    out = tap.feed(b": keep-alive\r\n\r\n" + USAGE.replace(b"\n\n", b"\r\n\r\n"))
    assert out == b": keep-alive\r\n\r\n"
    assert tap.outcome.usage == Usage(7, 2)


def test_non_streamed_body_outcome() -> None:
    """A chat completion's id, model, finish reason and usage, cached tokens included."""
    outcome = Outcome()
    read_body(
        {
            "id": "x",
            "model": "m",
            "choices": [{"finish_reason": "length", "message": {"content": "t"}}],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
        },
        outcome,
        keep_text=True,
    )
    assert (outcome.response_id, outcome.response_model) == ("x", "m")
    assert (outcome.finish_reasons, outcome.usage, outcome.output_text) == (
        ["length"],
        Usage(3, 4, 2),
        ["t"],
    )


def _stop_event(end: bytes) -> bytes:
    doc = {
        "id": "c9",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    return b"data: " + orjson.dumps(doc) + end


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", [1, 3, 64])
def test_events_end_at_an_empty_line_whatever_the_line_ends(line_end: bytes, size: int) -> None:
    """LF, CRLF and CR-only streams are split into the same events, fed in any piece size."""
    stream = (
        b": keep-alive"
        + line_end
        + line_end
        + _stop_event(line_end * 2)
        + b"event: x"
        + line_end
        + b"data: [DONE]"
        + line_end * 2
    )
    tap = SSETap(orjson.loads, strip_usage=True)
    out = b"".join(tap.feed(stream[i : i + size]) for i in range(0, len(stream), size))
    out += tap.finish()
    assert out == stream
    assert tap.events == 3
    assert tap.outcome.finish_reasons == ["stop"]


def test_a_single_crlf_does_not_end_an_event() -> None:
    """CRLF is one line end, so data split over two lines stays one event."""
    tap = SSETap(orjson.loads, strip_usage=True)
    assert tap.feed(b"event: a\r\ndata: 1\r\n") == b""
    assert tap.feed(b"\r\n") == b"event: a\r\ndata: 1\r\n\r\n"
    assert tap.events == 1


@pytest.mark.parametrize(
    ("buffer", "end"),
    [
        (b"data: 1\n\n", 9),
        (b"data: 1\r\n\r\nrest", 11),
        (b"data: 1\r\rx", 9),
        (b"data: 1\n\r\n", 10),
        (b"data: 1\r\n", -1),
        (b"data: 1\ndata: 2\n", -1),
        (b"data: 1", -1),
    ],
)
def test_event_end(buffer: bytes, end: int) -> None:
    """event_end finds just past the first empty line, or -1 while the event is incomplete."""
    assert event_end(buffer, 0) == end


def test_a_huge_event_is_searched_once() -> None:
    """Feeding one 4 MiB event in 64 KiB pieces never searches earlier bytes again."""
    tap = SSETap(orjson.loads)
    event = b'data: {"type":"image.partial","b64":"' + b"A" * (4 << 20) + b'"}\n\n'
    fed = 0
    for i in range(0, len(event) - 2, 65536):
        piece = event[i : min(i + 65536, len(event) - 2)]
        assert tap.feed(piece) == piece
        fed += len(piece)
        assert tap._scanned >= fed - 4  # the next search starts at the new bytes
    tap.feed(b"\n\n")
    assert tap.events == 1 and tap._scanned == 0


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ({"status": "completed", "output": [{"type": "message"}]}, "stop"),
        ({"status": "completed", "output": [{"type": "function_call"}]}, "tool_call"),
        (
            {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
            "length",
        ),
        (
            {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}},
            "content_filter",
        ),
        ({"status": "failed"}, "error"),
        ({"status": "cancelled"}, "error"),
        ({"status": "queued"}, None),
        ({"status": "in_progress"}, None),
        ({}, None),
    ],
)
def test_responses_status_maps_to_opentelemetry_finish_reasons(
    response: dict[str, object], reason: str | None
) -> None:
    """A Responses status is a state; the span gets OpenTelemetry's finish reason for it."""
    assert responses_finish_reason(response) == reason


def _plain(text: str) -> bytes:
    return chunk(text, usage=False)


def _two_choices(text: str) -> bytes:
    doc = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "delta": {"content": text}, "finish_reason": None},
            {"index": 1, "delta": {"content": text}, "finish_reason": None},
        ],
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


RUNS = {
    "plain deltas": [_plain(f"w{i}") for i in range(8)],
    "usage nulls requested": [chunk(f"w{i}") for i in range(8)],
    "a finish in the middle": [_plain("a"), _plain("b"), chunk(finish="length", usage=False)]
    + [_plain(f"w{i}") for i in range(5)],
    # Whole string values equal to the markers: "content":"usage" holds "usage".
    "text that names the markers": [
        *(_plain(text) for text in ("a", "usage", "finish_reason", "response.completed")),
        *(_plain(text) for text in ("data: {", "z")),
    ],
    "a usage chunk in the middle": [_plain("a"), _plain("b"), USAGE.replace(b"7", b"1")]
    + [_plain(f"w{i}") for i in range(5)],
    "usage nulls with spaces": [_plain("a"), _plain("b")]
    + [_plain(f"w{i}")[:-3] + b', "usage": null}\n\n' for i in range(5)],
    "two choices per event": [_two_choices(f"w{i}") for i in range(6)],
    "a multi-line event": [_plain("a"), _plain("b"), b'data: {"choices":[],\ndata: "x":1}\n\n']
    + [_plain(f"w{i}") for i in range(5)],
    "a comment and an empty delta": [_plain("a"), b": keep-alive\n\n", _plain("b")]
    + [chunk(None, usage=False)] * 3
    + [_plain("c")],
    "a responses event": [_plain("a"), _plain("b")]
    + [b'data: {"type":"response.completed","response":{"id":"r9","status":"completed"}}\n\n']
    + [_plain(f"w{i}") for i in range(5)],
    # Text pieces are counted in data lines only: a comment or a second line that names one
    # must be read one by one.
    "a comment naming text, first in the run": [b': "content":"x"\n\n']
    + [_plain(f"w{i}") for i in range(5)],
    "a comment naming text, inside the run": [_plain("a"), _plain("b"), b': "content":"x"\n\n']
    + [_plain(f"w{i}") for i in range(5)],
    "a second line naming text": [_plain("a"), _plain("b")]
    + [_plain("c")[:-2] + b'\n: "content":"x"\n\n']
    + [_plain(f"w{i}") for i in range(5)],
    "an early done": [_plain("a"), DONE] + [_plain(f"w{i}") for i in range(5)],
}


@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("name", list(RUNS))
def test_a_run_of_events_in_one_chunk_reads_as_one_by_one(name: str, strip: bool) -> None:
    """Many events in one read (a fast provider, a buffering proxy) are read as a block when
    they are plain deltas: the forwarded bytes and everything learned match the same events fed
    one per chunk (read one by one), with the first event, the tail and any event the block
    test cannot vouch for read whole."""
    stream = chunk("first") + b"".join(RUNS[name]) + chunk(finish="stop") + USAGE
    events = [stream[i : j + 2] for i, j in _event_bounds(stream)]
    together = SSETap(orjson.loads, strip_usage=strip)
    alone = SSETap(orjson.loads, strip_usage=strip)
    out_together = together.feed(stream) + together.finish()
    out_alone = b"".join(alone.feed(e) for e in events) + alone.finish()
    assert out_together == out_alone
    assert together.outcome == alone.outcome
    assert together.events == alone.events == len(events)
    assert together.outcome.usage == Usage(7, 2)


def test_the_block_test_reads_a_plain_run_without_parsing_it() -> None:
    """The block path is taken for plain deltas (else the test above compares the one-by-one
    path with itself): of 12 deltas between the first event and the tail, none is parsed."""
    parsed: list[bytes] = []

    def loads(data: bytes) -> object:
        parsed.append(data)
        return orjson.loads(data)

    tap = SSETap(loads, strip_usage=True)
    stream = chunk("first") + b"".join(_plain(f"w{i}") for i in range(12)) + chunk(finish="stop")
    tap.feed(stream + USAGE + DONE)
    assert len(parsed) == 3  # the first event, the finish, the usage
    assert tap.outcome.content_chunks == 13 and tap.events == 16


def _event_bounds(stream: bytes) -> list[tuple[int, int]]:
    bounds, start = [], 0
    while (end := stream.find(b"\n\n", start)) >= 0:
        bounds.append((start, end))
        start = end + 2
    return bounds


@pytest.mark.parametrize("together", [True, False])
def test_usage_carried_by_the_deltas_themselves_is_read(together: bool) -> None:
    """Some backends report usage on every delta (vLLM's continuous usage stats), with no usage
    chunk at the end: those deltas are not plain, and the last report is the call's usage."""

    def delta(i: int) -> bytes:
        usage = {"prompt_tokens": 3, "completion_tokens": i, "total_tokens": 3 + i}
        return b"data: " + orjson.dumps({**orjson.loads(_plain(f"w{i}")[6:]), "usage": usage})

    events = [delta(i) + b"\n\n" for i in range(1, 9)] + [DONE]
    tap = SSETap(orjson.loads, strip_usage=True)
    for piece in [b"".join(events)] if together else events:
        tap.feed(piece)
    tap.finish()
    assert tap.outcome.usage == Usage(3, 8)


def _vllm_delta(i: int) -> bytes:
    """A delta that carries usage itself (vLLM's continuous usage stats)."""
    usage = {"prompt_tokens": 3, "completion_tokens": i, "total_tokens": 3 + i}
    return b"data: " + orjson.dumps({**orjson.loads(_plain(f"w{i}")[6:]), "usage": usage}) + b"\n\n"


STREAMS = {
    **{
        f"run: {name}": chunk("first") + b"".join(run) + chunk(finish="stop") + USAGE + DONE
        for name, run in RUNS.items()
    },
    "usage nulls and the usage chunk": chunk("a") + chunk(finish="stop") + USAGE + DONE,
    "the usage chunk first": USAGE + chunk("a") + chunk(finish="stop") + DONE,
    "usage in every delta": b"".join(_vllm_delta(i) for i in range(1, 6)) + DONE,
    "crlf": (chunk("a") + USAGE + DONE).replace(b"\n\n", b"\r\n\r\n"),
    "crlf after lf": chunk("a") + chunk("b") + (USAGE + DONE).replace(b"\n\n", b"\r\n\r\n"),
    "three lfs before the usage chunk": chunk("a") + b"\n" + USAGE + b"\n\n\n" + DONE,
    "a usage chunk with spaces": chunk("a") + USAGE.replace(b'"usage":', b'"usage": ') + DONE,
    "a usage chunk that is not json": chunk("a") + b'data: {"choices":[],"usage":{x}\n\n' + DONE,
    "a usage with choices": chunk("a") + USAGE.replace(b'"choices":[]', b'"choices":[{}]') + DONE,
    "responses": (
        b'event: response.created\ndata: {"type":"response.created","response":'
        b'{"id":"r1","model":"m","status":"in_progress","usage":null}}\n\n'
        b'event: response.completed\ndata: {"type":"response.completed","response":'
        b'{"id":"r1","model":"m","status":"completed","usage":{"input_tokens":5,'
        b'"output_tokens":1}}}\n\n'
    ),
    "cut short": chunk("a") + chunk("b") + USAGE[:30],
    "a usage that is not a count": chunk("a")
    + USAGE.replace(b'"prompt_tokens":7', b'"prompt_tokens":"n/a"')
    + DONE,
    # Not SSE: a usage null on a line of its own, after the event that ends before it.
    "a usage null after an event's end": chunk("a", usage=False)[:-4]
    + b'}], \n\n"usage": null}\n\n'
    + USAGE
    + DONE,
    # Not SSE either: the first event's JSON goes on in a line that is not a data line.
    "a first event over a line that is not data": b'data: {"id":"c1","model":"m","choices":[],'
    + b'\n"usage":{"prompt_tokens":11,"completion_tokens":7}}\n\n'
    + chunk("a")
    + DONE,
    "an early done, cut short": chunk("first") + DONE + chunk("a") + chunk(finish="stop") + USAGE,
    "a finish over two lines": chunk("a")
    + chunk(finish="stop").replace(b'"finish_reason":', b'"finish_reason":\ndata: ')
    + USAGE
    + DONE,
    "no usage, a comment naming text": chunk("first")
    + b': "content":"x"\n\n'
    + chunk("a")
    + chunk(finish="stop")
    + DONE,
    "a spaced finish beside a null one": chunk("a")
    + _two_choices("b").replace(b'"finish_reason":null}]', b'"finish_reason": "stop"}]')
    + USAGE
    + DONE,
    # The id and the model come from the first event that names them and is parsed.
    **{
        f"a first event without {key}": b'data: {"' + key + b'":"x","choices":[{"index":0,'
        b'"delta":{},"finish_reason":null}]}\n\n'
        b'data: {"id":"x2","model":"m2","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        + USAGE.replace(b'"id":"c1"', b'"id":"c1","model":"m1"')
        + DONE
        for key in (b"model", b"id")
    },
    "long": chunk("first") + b"".join(_plain(f"w{i}" * 40) for i in range(400)) + USAGE + DONE,
}


@pytest.mark.parametrize("keep_text", [False, True])
@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("name", list(STREAMS))
def test_a_deferred_tap_forwards_and_reads_what_the_tap_does(
    name: str, size: int, strip: bool, keep_text: bool
) -> None:
    """DeferredTap forwards each chunk's bytes as SSETap would (usage chunk and usage nulls
    left out when stripping, partial events held back), and once read, knows the same."""
    stream = STREAMS[name]
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    tap = SSETap(orjson.loads, strip_usage=strip, keep_text=keep_text)
    deferred = DeferredTap(orjson.loads, strip_usage=strip, keep_text=keep_text)
    for piece in pieces:
        assert deferred.feed(piece) == tap.feed(piece)
    assert deferred.finish() == tap.finish()
    assert deferred.read() == tap.outcome


def test_a_deferred_tap_reads_nothing_until_asked() -> None:
    """Only a possible usage chunk is parsed as the stream passes (to leave it out); the rest
    is read by `read`, where the usage chunk is read again."""
    parsed: list[bytes] = []

    def loads(data: bytes) -> object:
        parsed.append(data)
        return orjson.loads(data)

    deferred = DeferredTap(loads, strip_usage=True)
    out = deferred.feed(chunk("a") + chunk("b") + chunk(finish="stop"))
    out += deferred.feed(USAGE + DONE) + deferred.finish()
    stop = chunk(finish="stop", usage=False)
    assert out == chunk("a", usage=False) + chunk("b", usage=False) + stop + DONE
    assert len(parsed) == 1 and deferred.outcome.usage is None
    assert deferred.read().usage == Usage(7, 2)
    assert deferred.outcome.finish_reasons == ["stop"] and deferred.outcome.complete


def test_a_deferred_tap_keeps_at_most_held_max_unread() -> None:
    """A long stream is read in pieces as it passes: never more than HELD_MAX bytes kept."""
    deferred = DeferredTap(orjson.loads)
    event = _plain("w" * 1000)
    fed = 0
    for _ in range(3 * HELD_MAX // len(event)):
        deferred.feed(event)
        fed += len(event)
        assert deferred._size <= HELD_MAX
    assert deferred.outcome.content_chunks > 0  # read before `read`
    deferred.read()
    assert deferred.outcome.content_chunks == fed // len(event)


def test_a_whole_plain_stream_is_read_at_once() -> None:
    """A stream that ended before it was read is read whole: of 12 deltas between the first
    event and the finish, none is parsed; a stream cut short is read event by event."""
    parsed: list[bytes] = []

    def loads(data: bytes) -> object:
        parsed.append(data)
        return orjson.loads(data)

    stream = chunk("first") + b"".join(_plain(f"w{i}") for i in range(12)) + chunk(finish="stop")
    deferred = DeferredTap(loads)
    for i in range(0, len(stream), 100):
        deferred.feed(stream[i : i + 100])
    deferred.feed(USAGE + DONE)
    deferred.finish()
    assert deferred.read() == _read_one_by_one(stream + USAGE + DONE)
    assert len(parsed) == 3  # the first event, the finish, the usage
    assert SSETap(orjson.loads).read_whole(stream + USAGE + DONE)
    tap = SSETap(orjson.loads)
    assert not tap.read_whole(stream + USAGE[:-1]) and tap.outcome == Outcome() and not tap.events


def _read_one_by_one(stream: bytes) -> Outcome:
    tap = SSETap(orjson.loads)
    for start, end in _event_bounds(stream):
        tap.feed(stream[start : end + 2])
    tap.finish()
    return tap.outcome


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "n/a", "completion_tokens": 1},
        {"prompt_tokens": 3, "completion_tokens": [1]},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {
            "prompt_tokens": 3,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": {}},
        },
        {"input_tokens": float("inf"), "output_tokens": 1},
        {"prompt_tokens": 18446744073709551615, "completion_tokens": 1},  # would wrap int64
        {"prompt_tokens": 3, "completion_tokens": 2**32},
    ],
)
def test_a_usage_whose_counts_are_not_counts_is_unknown(usage: dict[str, object]) -> None:
    """The provider's usage is then unknown (the gateway estimates it), never an exception."""
    assert usage_from({"usage": usage}) is None


def test_usage_counts_as_providers_send_them() -> None:
    """Absent or null counts are 0; an integral float or a digit string is read as a count."""
    assert usage_from({"usage": {"prompt_tokens": 3.0, "completion_tokens": None}}) == Usage(3, 0)
    assert usage_from({"usage": {"input_tokens": "5", "output_tokens": 2}}) == Usage(5, 2)


def test_an_event_split_over_many_chunks_is_searched_once_when_stripping() -> None:
    """A 4 MiB event in 64 KiB pieces is held by the tap's own buffer (each byte searched once),
    never joined again per piece: what is forwarded matches SSETap's."""
    deferred = DeferredTap(orjson.loads, strip_usage=True)
    tap = SSETap(orjson.loads, strip_usage=True)
    event = b'data: {"choices":[{"delta":{"content":"' + b"A" * (4 << 20) + b'"}}]}\n\n'
    fed = 0
    for i in range(0, len(event), 65536):
        piece = event[i : i + 65536]
        assert deferred.feed(piece) == tap.feed(piece)
        fed += len(piece)
        if len(piece) < fed < len(event):  # the first piece alone is held as it came
            assert deferred._rest == b"" and deferred._tap._scanned >= fed - 4
    assert deferred.finish() == tap.finish()
    assert deferred.read() == tap.outcome


@pytest.mark.parametrize("strip", [False, True])
def test_a_deferred_tap_keeps_few_chunks(strip: bool) -> None:
    """Fed a byte at a time, a tap keeps fewer than HELD_CHUNKS chunks (each an object)."""
    deferred = DeferredTap(orjson.loads, strip_usage=strip)
    for byte in STREAMS["long"][:20_000]:
        deferred.feed(bytes([byte]))
        assert len(deferred._kept) < HELD_CHUNKS and deferred._size <= HELD_MAX


def _doc_event(doc: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def _choices(*finishes: str | None, text: str = "t") -> bytes:
    """A chunk of several choices (n > 1, as vLLM and others batch them), one finish each."""
    choices = [
        {"index": i, "delta": {"content": text}, "finish_reason": finish}
        for i, finish in enumerate(finishes)
    ]
    return _doc_event({"id": "c1", "model": "m", "choices": choices})


AZURE_FILTER = _doc_event(
    {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
)
"""Azure OpenAI's first chunk: its prompt filter results, with an empty id and model."""

PROVIDER_STREAMS = {
    "n=2, one choice ends beside the other's null": _choices(None, None)
    + _choices("length", None)
    + _choices(None, None)
    + _choices(None, "stop")
    + USAGE
    + DONE,
    "n=2, a choice ends inside a run": _choices(None, None)
    + b"".join(_choices(None, None, text=f"w{i}") for i in range(5))
    + _choices("length", None)
    + b"".join(_choices(None, None, text=f"v{i}") for i in range(5))
    + _choices(None, "stop")
    + DONE,
    "azure: the first chunk's id and model are empty": AZURE_FILTER
    + b"".join(chunk(f"w{i}").replace(b'"id":"c1"', b'"id":"az1"') for i in range(6))
    + chunk(finish="stop").replace(b'"id":"c1"', b'"id":"az1"')
    + USAGE.replace(b'"id":"c1"', b'"id":"az1","model":"gpt-4o-mini"')
    + DONE,
    # A client that hangs up leaves a stream with neither finish nor usage chunk: the id and
    # the model must come from the deltas.
    "azure, cut short": AZURE_FILTER
    + b"".join(chunk(f"w{i}").replace(b'"id":"c1"', b'"id":"az1"') for i in range(6)),
    "openrouter: a comment first, cut short": b": OPENROUTER PROCESSING\n\n"
    + b"".join(_plain(f"w{i}") for i in range(6)),
    "openai: usage asked for": b"".join(chunk(f"w{i}") for i in range(8))
    + chunk(finish="stop")
    + USAGE
    + DONE,
    "choices that are not a list": chunk("a")
    + b'data: {"id":"c1","model":"m","choices":1}\n\n'
    + b'data: {"id":"c1","model":"m","choices":true,"usage":null}\n\n'
    + b'data: {"id":"c1","model":"m","choices":"x"}\n\n'
    + chunk(finish="stop")
    + USAGE
    + DONE,
    "finish reasons that are not text": chunk("a")
    + _choices("length").replace(b'"length"', b"7")
    + _choices("length").replace(b'"length"', b'{"type":"stop"}')
    + _choices("length").replace(b'"length"', b'["stop"]')
    + chunk(finish="stop")
    + DONE,
}
PROVIDER_STREAMS["crlf: choices that are not a list"] = PROVIDER_STREAMS[
    "choices that are not a list"
].replace(b"\n\n", b"\r\n\r\n")


def _read_the_slow_way(stream: bytes) -> tuple[object, ...]:
    """What a stream says, with every event's data parsed: each choice's finish reason in order,
    the first id and model that are not empty, the last usage, whether [DONE] came."""
    reasons: list[str] = []
    ids: list[str] = []
    models: list[str] = []
    usage = None
    done = False
    for event in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[6:] for line in event.split(b"\n") if line.startswith(b"data: "))
        if data == b"[DONE]":
            done = True
        elif data:
            doc = orjson.loads(data)
            ids += [doc["id"]] if doc.get("id") else []
            models += [doc["model"]] if doc.get("model") else []
            choices = doc["choices"] if isinstance(doc.get("choices"), list) else []
            reasons += [c["finish_reason"] for c in choices if isinstance(c["finish_reason"], str)]
            usage = usage_from(doc) or usage
    return reasons, ids[:1], models[:1], usage, done


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("size", [1, 150, 1 << 20])
@pytest.mark.parametrize("name", list(PROVIDER_STREAMS))
def test_a_tap_learns_what_every_event_says(
    name: str, size: int, strip: bool, deferred: bool
) -> None:
    """Fed in any pieces, read at once or later, a tap records every choice's finish reason,
    the first id and model that are not empty, and the usage, as parsing every event would."""
    stream = PROVIDER_STREAMS[name]
    tap = (DeferredTap if deferred else SSETap)(orjson.loads, strip_usage=strip)
    for i in range(0, len(stream), size):
        tap.feed(stream[i : i + size])
    tap.finish()
    outcome = tap.read() if isinstance(tap, DeferredTap) else tap.outcome
    got = (
        outcome.finish_reasons,
        [outcome.response_id],
        [outcome.response_model],
        outcome.usage,
        outcome.complete,
    )
    assert got == _read_the_slow_way(stream)


@pytest.mark.parametrize(
    ("text", "set_"),
    [
        (b'"finish_reason":null', False),
        (b'"finish_reason": null', False),
        (b'"finish_reason" :\t null', False),
        (b'"finish_reason":"stop"', True),
        (b'"finish_reason": "length"', True),
        (b'"finish_reason":null},{"finish_reason": "stop"', True),
    ],
)
def test_a_finish_reason_is_set_when_its_value_is_not_null(text: bytes, set_: bool) -> None:
    """However it is spaced, a null is never taken for a value."""
    assert (_FINISH_SET.search(text) is not None) == set_


def test_a_body_whose_lists_are_not_lists_says_what_it_can() -> None:
    """`choices`, `output` or a reason of another type is skipped, never iterated or turned
    into its Python text; the id, model and usage are still read."""
    chat = Outcome()
    read_body({"id": "c1", "model": "m", "choices": 1, "usage": {"prompt_tokens": 2}}, chat)
    assert (chat.response_id, chat.response_model, chat.usage) == ("c1", "m", Usage(2, 0))
    response = Outcome()
    read_body({"object": "response", "status": "completed", "output": 5}, response, keep_text=True)
    assert response.finish_reasons == ["stop"] and response.output_text == []
    reasons = Outcome()
    read_body({"choices": [{"finish_reason": {"type": "stop"}}, {"finish_reason": 1}]}, reasons)
    assert reasons.finish_reasons == []


@pytest.mark.parametrize("deferred", [False, True])
def test_every_piece_of_output_counts_toward_the_estimate(deferred: bool) -> None:
    """Without a usage (a client that left, a provider that sends none), each streamed piece
    of text, reasoning or tool call arguments is about one token: none is left uncounted."""
    pieces = [
        {"reasoning_content": "Think"},
        {"reasoning_content": "ing"},
        {"content": "Let me look."},
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]
    stream = b"".join(
        _doc_event({"id": "c1", "model": "m", "choices": [{"delta": d, "finish_reason": None}]})
        for d in pieces * 3
    )
    tap = (DeferredTap if deferred else SSETap)(orjson.loads)
    tap.feed(stream)
    outcome = tap.read() if isinstance(tap, DeferredTap) else tap.outcome
    assert outcome.content_chunks == 18


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("usage", [b'{"prompt_tokens":"n/a","completion_tokens":"n/a"}', b'"n/a"'])
def test_the_usage_chunk_asked_for_goes_whatever_its_counts(deferred: bool, usage: bytes) -> None:
    """A client that did not ask for usage never gets the usage chunk the gateway asked for
    (`choices: []`, which SDK code reading `chunk.choices[0]` breaks on), counts or not."""
    usage_chunk = b'data: {"id":"c1","model":"m","choices":[],"usage":' + usage + b"}\n\n"
    stream = _plain("a") + chunk(finish="stop", usage=False) + usage_chunk + DONE
    tap = (DeferredTap if deferred else SSETap)(orjson.loads, strip_usage=True)
    out = tap.feed(stream) + tap.finish()
    assert out == _plain("a") + chunk(finish="stop", usage=False) + DONE
