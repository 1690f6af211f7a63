"""What a provider's answer says: usage, finish reasons, ids, read from JSON or from an SSE stream.

The stream tap is pure and incremental: feed it chunks as they arrive and forward what it returns.
It parses only the few events that carry something it needs, and can remove the usage chunk that
the gateway asked for on a client's behalf.

JSON arrives parsed by orjson, so objects are dicts: they are checked with `isinstance(x, dict)`,
a fraction of the cost of the Mapping ABC on the request path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard, cast

Loads = Callable[[bytes], Any]

_LONGEST_END = 4  # CRLF CRLF
_WHOLE_PROBE = 1 << 16
_END_PROBE = 4096
_RUN_MIN = 4
"""Plain deltas in one chunk from which they are tested as one block (below it, one by one is
as quick)."""
_LF, _CR = 10, 13
_FINISH_SET = re.compile(rb'"finish_reason"\s*+:\s*+(?!null)')
"""A finish reason that is not null, spaced or not (possessive: a space is never taken for the
value): one choice's end, even beside null ones."""
_USAGE_NULL = re.compile(rb'"usage":\s*null')
_USAGE_NULL_FIELD = re.compile(rb',[ \t]*"usage":[ \t]*null')
"""A `"usage": null` field, spaced within its line (never across an event's end)."""
_REASON_SET = re.compile(rb'_reason"(?!:null)')
"""`_reason"` not followed by `:null`: where `read_whole` looks for events to parse, each then
judged by `_worth_parsing` (`_FINISH_SET`); as a search of a whole stream 1.5 µs quicker per
22-event stream than `_FINISH_SET` itself (bench_sse.py's `read`)."""
_USAGE_VALUE = re.compile(rb'"usage"(?!:null)')
"""A usage that is not `null` in the compact form: the only kind an event can be dropped for."""
HELD_MAX = 1 << 14
"""Bytes a DeferredTap keeps unread at most; past it, what it keeps is read at once."""
HELD_CHUNKS = 64
"""Chunks a DeferredTap keeps unread at most (a chunk of a few bytes costs an object)."""
_RESPONSE_EVENTS = (
    b"response.created",
    b"response.completed",
    b"response.incomplete",
    b"response.failed",
)


@dataclass(slots=True)
class Usage:
    """Token counts of one call; never changed once read (not `frozen`, which costs an
    `object.__setattr__` call per field, per call)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0


@dataclass(slots=True)
class ToolCall:
    """A function call the model asked for; a streamed one's arguments grow delta by delta."""

    id: str | None
    name: str
    arguments: str


@dataclass(slots=True)
class Outcome:
    """What the provider's answer said, filled in as it is read."""

    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    usage: Usage | None = None
    output_text: list[str] = field(default_factory=list)
    """Text pieces, kept only when asked (for token estimates and content capture)."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """The answer's function calls, kept with the text (only for content capture when
    streamed)."""
    content_chunks: int = 0
    """Pieces of streamed output (each `content":"` key, reasoning's too, `"arguments":"` of a
    tool call, `"delta":"`: one per event in chat streams, one per choice when an event carries
    several): about one token each, for estimates when there is no usage. A finished stream
    that had a usage leaves it 0."""
    complete: bool = False
    """The stream's last event was seen (`[DONE]`, or a Responses `response.completed`,
    `.incomplete` or `.failed`): the client has the whole answer."""


def usage_from(doc: Mapping[str, Any]) -> Usage | None:
    """Chat's prompt/completion_tokens or the Responses API's input/output_tokens; None when
    there is none, or when a count is not a count (`"n/a"`, a list, a negative number: the
    provider's usage is then unknown, and the gateway estimates it)."""
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        keys = ("prompt_tokens", "completion_tokens", "prompt_tokens_details")
    elif "input_tokens" in usage:
        keys = ("input_tokens", "output_tokens", "input_tokens_details")
    else:
        return None
    details = usage.get(keys[2])
    counts = (
        _tokens(usage.get(keys[0])),
        _tokens(usage.get(keys[1])),
        _tokens(details.get("cached_tokens")) if isinstance(details, dict) else 0,
    )
    if None in counts:
        return None
    return Usage(*cast(tuple[int, int, int], counts))


MAX_TOKENS = (1 << 32) - 1
"""More tokens than any model reads or writes in one call: a larger count is not a count (it
would wrap OTLP's int64 and make a cost of trillions of dollars)."""


def _tokens(value: Any) -> int | None:
    """A token count as sent (absent or null: 0; an int, or a float or digit string read as
    one), or None when it is not one (negative, over MAX_TOKENS)."""
    if value is None:
        return 0
    try:
        count = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return count if 0 <= count <= MAX_TOKENS else None


def _list(value: object) -> list[Any]:
    """A provider's list (`choices`, `output`, `content`) or, when it sent something else (a
    number, a string, an object), none: never iterated as what it is not."""
    return value if isinstance(value, list) else []


def _is_reason(value: object) -> TypeGuard[str]:
    """A finish reason as OpenTelemetry records one: a non-empty string (a number or an
    object in its place is not recorded, never turned into its Python text)."""
    return isinstance(value, str) and value != ""


def _names_known(outcome: Outcome) -> bool:
    """Whether the stream has named its id and model (both non-empty) in `outcome`."""
    return bool(outcome.response_id and outcome.response_model)


def _usage_chunk(doc: Mapping[str, Any], choices: list[Any]) -> bool:
    """Whether a parsed chat chunk is the usage chunk (`choices` its list): a usage that is not
    null and no choice, even when its counts are not counts. With `strip_usage` it is the one
    the gateway asked for, and goes."""
    return not choices and doc.get("usage") is not None


def read_body(doc: Any, outcome: Outcome, *, keep_text: bool = False) -> None:
    """Fill `outcome` from a non-streamed chat completion or Responses API object."""
    if not isinstance(doc, dict):
        return
    outcome.response_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    outcome.response_model = doc.get("model") if isinstance(doc.get("model"), str) else None
    outcome.usage = usage_from(doc)
    for choice in _list(doc.get("choices")):
        if isinstance(choice, dict):
            if _is_reason(reason := choice.get("finish_reason")):
                outcome.finish_reasons.append(reason)
            message = choice.get("message")
            if keep_text and isinstance(message, dict):
                if isinstance(message.get("content"), str):
                    outcome.output_text.append(message["content"])
                if message.get("tool_calls"):
                    outcome.tool_calls.extend(_chat_tool_calls(message["tool_calls"]))
    if doc.get("object") == "response":
        reason = responses_finish_reason(doc)
        if reason is not None:
            outcome.finish_reasons.append(reason)
        if keep_text:
            outcome.output_text.extend(_response_text(doc))
            outcome.tool_calls.extend(_response_tool_calls(doc))


def _chat_tool_calls(calls: object) -> list[ToolCall]:
    """A chat message's `tool_calls` (function ones; a custom tool's `input` as its arguments)."""
    found = []
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        body = call.get("function") or call.get("custom")
        body = body if isinstance(body, dict) else {}
        arguments = body.get("arguments", body.get("input"))
        found.append(
            ToolCall(
                call["id"] if isinstance(call.get("id"), str) else None,
                body["name"] if isinstance(body.get("name"), str) else "",
                arguments if isinstance(arguments, str) else "",
            )
        )
    return found


def _response_tool_calls(response: Mapping[str, Any]) -> list[ToolCall]:
    """A Responses object's `function_call` (and `custom_tool_call`) output items."""
    found = []
    for item in _list(response.get("output")):
        if isinstance(item, dict) and item.get("type") in _TOOL_CALLS:
            arguments = item.get("arguments", item.get("input"))
            found.append(
                ToolCall(
                    item["call_id"] if isinstance(item.get("call_id"), str) else None,
                    item["name"] if isinstance(item.get("name"), str) else "",
                    arguments if isinstance(arguments, str) else "",
                )
            )
    return found


_TOOL_CALLS = frozenset({"function_call", "custom_tool_call"})


def responses_finish_reason(response: Mapping[str, Any]) -> str | None:
    """A Responses API object's outcome as OpenTelemetry's finish reason, or None unfinished.

    `status` is a state, not a reason: `completed` is `stop`, or `tool_call` when the output asks
    for a function call; `incomplete` is `length` for `max_output_tokens` and `content_filter` for
    that reason; `failed` and `cancelled` are `error`; `queued` and `in_progress` (background
    calls) have no reason yet. (OpenTelemetry GenAI FinishReason: stop, length, content_filter,
    tool_call, error.)
    """
    status = response.get("status")
    if status == "completed":
        for item in _list(response.get("output")):
            if isinstance(item, dict) and item.get("type") in _TOOL_CALLS:
                return "tool_call"
        return "stop"
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    if status in ("failed", "cancelled"):
        return "error"
    if status in ("queued", "in_progress") or not isinstance(status, str):
        return None
    return status


class SSETap:
    """Watches an SSE stream; with `strip_usage`, drops the usage-only chunk from what it returns.

    Without stripping, `feed` returns each chunk unchanged at once. With it, only complete events
    are returned (a partial event waits for its end, usually in the same network read).
    """

    def __init__(
        self,
        loads: Loads,
        *,
        strip_usage: bool = False,
        keep_text: bool = False,
        keep_tool_calls: bool = False,
        outcome: Outcome | None = None,
    ) -> None:
        self._loads = loads
        self._strip = strip_usage
        self._keep_tools = keep_tool_calls
        self._keep_text = keep_text or keep_tool_calls
        """Every chat chunk is parsed (tool call deltas hold no text but are wanted too)."""
        self._calls: dict[int, ToolCall] = {}
        """Streamed chat tool calls by their index, as their deltas accumulate."""
        self._buffer = bytearray()
        self._scanned = 0
        """Bytes of the buffer already searched for an event end (less the longest end)."""
        self.outcome = Outcome() if outcome is None else outcome
        self._named = _names_known(self.outcome)
        """Whether the stream named its id and model (Azure's first chunk names them empty; a
        stream may begin with a comment): until then every chat event is parsed. Kept as it
        changes, not derived from `outcome` per event (a property cost about 10 µs more per
        22-event stream fed event by event, bench_sse.py)."""
        self.events = 0
        """Events read (by `read_whole`: all of them when it counted text pieces, else the
        ones it parsed)."""

    def feed(self, chunk: bytes) -> bytes:
        """Observe `chunk`; return the bytes to forward now.

        Costs time linear in the bytes fed, whatever the size of one event: an event that arrives
        in many chunks is searched for its end once, never rescanned from its start.
        """
        buffer = self._buffer
        if not buffer and b"\r" not in chunk:
            return self._feed_lf(chunk)
        buffer += chunk
        kept: list[bytes] = []
        start = 0
        while (end := event_end(buffer, max(start, self._scanned))) >= 0:
            event = bytes(memoryview(buffer)[start:end])
            start = end
            self._scanned = 0
            if self._observe(event):
                # Chunks carry "usage": null only because usage was requested: hide that too.
                strip = self._strip and b'"usage"' in event
                kept.append(_without_usage_null(event) if strip else event)
        if start:
            del buffer[:start]
        self._scanned = max(0, len(buffer) - _LONGEST_END)
        if not self._strip:
            return chunk
        return b"".join(kept)

    def _feed_lf(self, chunk: bytes) -> bytes:
        """`feed` for a chunk that starts a new event and holds no CR (what providers send): an
        event then ends at each LF LF, so one `split` finds every end (as `event_end` would, one
        by one), with no copy of the chunk into the buffer."""
        parts = chunk.split(b"\n\n")
        rest = parts.pop()
        # The events that name the id and the model are read first, one by one (most streams:
        # the first event alone); none after them is needed for those.
        low = 0
        before: list[bytes] = []
        while not self._named and low < len(parts):
            if self._observe(parts[low]):
                before.append(parts[low])
            low += 1
        run = (
            self._plain_run(parts, chunk, len(chunk) - len(rest), low)
            if len(parts) - low >= _RUN_MIN and not self._keep_text
            else None
        )
        if run is None:
            kept = self._observe_all(parts[low:] if low else parts)
            if before:
                kept[:0] = before
            whole = len(kept) == len(parts)
        else:
            high, block, content = run
            # Those after the run are not plain deltas to count.
            self.events += high - low
            self.outcome.content_chunks += content
            after = [part for part in parts[high:] if self._observe(part)]
            whole = len(before) + len(after) == len(parts) - (high - low)
            kept = [*before, block, *after]
        if not self._strip:
            out = chunk
        elif whole and chunk.find(b'"usage"', 0, len(chunk) - len(rest)) < 0:
            out = chunk[: len(chunk) - len(rest)]
        else:  # an event left out, or "usage": null fields there only because usage was asked
            out = b"".join([_without_usage_null(part) + b"\n\n" for part in kept])
        if rest:
            self._buffer += rest
            self._scanned = max(0, len(rest) - _LONGEST_END)
        return out

    def _plain_run(
        self, parts: list[bytes], chunk: bytes, whole: int, low: int
    ) -> tuple[int, bytes, int] | None:
        """The longest run of plain chat deltas from `parts[low]` on (the events before it were
        read), checked as one block: (end index, the run's bytes without its last LF LF, its
        text pieces), or None when there is no run of `_RUN_MIN` events or the block test
        cannot vouch for it.

        A provider that sends faster than the gateway reads (or a buffering proxy in between)
        delivers many events per read; testing each for being a plain delta is a Python step
        per event, while the block is tested with a few scans of its bytes (memchr speed). The
        run is what is left between the events that named the id and the model (read whole)
        and the trailing events that are not plain deltas (finish, usage, `[DONE]`).
        It passes when what reading its events one by one would record is only their number
        and their text pieces: every event is one `data: {` line (no LF inside: JSON text holds
        none unescaped, so every LF LF is an event end, and no `[DONE]` or comment is among
        them); every `"usage"` part of `,"usage":null` (what OpenAI adds to every chunk when
        usage was asked) and every `"finish_reason"` followed by `:null` (inside a JSON string a
        quote is escaped, so such a marker is a key or a whole string value, and a value only
        makes the test fail: the events are then read one by one); no Responses API event name.
        """
        high = len(parts)
        while high > low and not _plain_delta(parts[high - 1]):
            high -= 1
        count = high - low
        if count < _RUN_MIN:
            return None
        start = sum(len(part) + 2 for part in parts[:low])
        end = whole - 2
        for part in parts[high:]:
            end -= len(part) + 2
        block = chunk[start:end]
        if (
            not block.startswith(b"data: {")
            or block.count(b"\n") != 2 * (count - 1)
            or block.count(b"\n\ndata: {") != count - 1
            or (b'"usage"' in block and block.count(b'"usage"') != block.count(b',"usage":null'))
            or block.count(b'"finish_reason"') != block.count(b'"finish_reason":null')
            or (b"response." in block and any(kind in block for kind in _RESPONSE_EVENTS))
        ):
            return None
        return high, block, _text_pieces(block)

    def read_whole(self, body: bytes) -> bool:
        """Read a whole stream at once, as feeding it and finishing would; False, with nothing
        read, unless this tap read nothing yet and `body` is a chat stream that starts with a
        `data: {` event naming the id and the model (not empty), ends with an LF-ended event
        (`[DONE]`, if anywhere, last), is at most 64 KiB, and holds no CR and no Responses
        event name.

        Only the first event and the ones that may say more than their text pieces are parsed:
        those with a finish reason that is not `"finish_reason":null` (`_REASON_SET`), or a usage
        that is not a compact null, each then read as `_observe` reads it (each must be one
        `data: {` line). Any other event, read one by one, would be parsed or not but add
        nothing: the id and the model are known, and a finish reason or usage it could add
        would have been found. Text pieces (and events) are counted, when the stream had no
        usage, over the whole body once every event is known to be one `data:` line.
        """
        size = len(body)
        if (
            self.events
            or self._keep_text
            or size > _WHOLE_PROBE
            or not body.startswith(b"data: {")
            or not body.endswith(b"\n\n")
            or b"\r" in body
            or b"response." in body
        ):
            return False
        done = body.endswith(b"\n\ndata: [DONE]\n\n")
        if body.find(b"[DONE]", 0, size - 8 if done else size) >= 0:
            return False
        end = body.find(b"\n\n")
        one_line = body.find(b"\n", 0, end) < 0
        first = self._parse(body[6:end]) if one_line and b'"choices"' in body[:end] else None
        if (
            not isinstance(first, dict)
            or not isinstance(first.get("id"), str)
            or not isinstance(first.get("model"), str)
            or not first["id"]
            or not first["model"]
        ):
            return False
        starts = {body.rfind(b"\n\n", 0, m.start()) + 2 for m in _REASON_SET.finditer(body, end)}
        at, _ = _usage_value(body, body.find(b'"usage"', end), size)
        while at >= 0:
            starts.add(body.rfind(b"\n\n", 0, at) + 2)
            at, _ = _usage_value(body, body.find(b'"usage"', body.find(b"\n\n", at) + 2), size)
        docs = [first]
        for start in sorted(starts):
            stop = body.find(b"\n\n", start)
            if not body.startswith(b"data: {", start) or body.find(b"\n", start, stop) >= 0:
                return False
            data = body[start + 6 : stop]
            if b'"choices"' in data and _worth_parsing(data, first=False, keep_text=False):
                doc = self._parse(data)
                if isinstance(doc, dict):
                    docs.append(doc)
        if not any(usage_from(doc) is not None for doc in docs):
            events = body.count(b"\n\ndata: {") + 1 + done
            if body.count(b"\n") != 2 * events:  # a line that is not a data: { line
                return False
            self.events = events
            self.outcome.content_chunks += _text_pieces(body)
        else:
            self.events = len(docs) + done
        for doc in docs:
            self._chat_chunk(doc)
        if done:
            self.outcome.complete = True
        return True

    def _observe_all(self, parts: list[bytes]) -> list[bytes]:
        """`_observe` every event (each without its LF LF: never copied); the ones to keep.

        A plain chat delta (`_plain_delta`), the bulk of a stream, is only counted here once
        the id and the model are known, when text is not kept: what `_observe` would conclude
        about it, in a third of its steps.
        """
        kept: list[bytes] = []
        observe = self._observe
        plain = not self._keep_text
        events = self.events
        content = 0
        named = self._named
        for part in parts:
            if plain and named and _plain_delta(part):
                events += 1
                content += _text_pieces(part)
                kept.append(part)
                continue
            self.events = events
            if observe(part):
                kept.append(part)
            events = self.events
            named = self._named
        self.events = events
        self.outcome.content_chunks += content
        return kept

    @property
    def holds_partial(self) -> bool:
        """Whether a partial event is held (fed, not yet read or returned)."""
        return bool(self._buffer)

    def finish(self) -> bytes:
        """The stream ended: return whatever partial event is still held."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        if rest.strip():
            self._observe(rest)
        if self.outcome.usage is not None:
            self.outcome.content_chunks = 0  # not needed: see Outcome.content_chunks
        return rest if self._strip else b""

    def _observe(self, event: bytes) -> bool:
        """Record what the event says; False when it is the usage chunk to remove. The event's
        final empty line may be there or not."""
        self.events += 1
        if len(event) > _WHOLE_PROBE and not self._worth_reading(event):
            return True  # a huge event of no interest (an image's partial): never split or copied
        data = _data(event)
        if data is None:
            return True
        if data == b"[DONE]":
            self.outcome.complete = True
            return True
        first = not self._named
        # What an event is shows at its ends: the type or choices first, finish_reason and usage
        # last. A huge event (an image's base64 partial) is classified by its ends alone.
        probe = data if len(data) <= _WHOLE_PROBE else data[:_END_PROBE] + data[-_END_PROBE:]
        self.outcome.content_chunks += _text_pieces(probe)
        if b'"choices"' in probe:
            if not _worth_parsing(probe, first=first, keep_text=self._keep_text):
                return True
            doc = self._parse(data)
            if not isinstance(doc, dict):
                return True
            return self._chat_chunk(doc)
        head = event[:_END_PROBE]
        if any(kind in head for kind in _RESPONSE_EVENTS) or (
            self._keep_text and b"delta" in probe
        ):
            doc = self._parse(data)
            if isinstance(doc, dict):
                self._responses_event(doc)
        return True

    def _worth_reading(self, event: bytes) -> bool:
        """Whether a huge event may say something the tap records, judged by its two ends."""
        head, tail = event[:_END_PROBE], event[-_END_PROBE:]
        return (
            b'"choices"' in head
            or any(kind in head for kind in _RESPONSE_EVENTS)
            or (self._keep_text and (b"delta" in head or b"delta" in tail))
        )

    def _chat_chunk(self, doc: Mapping[str, Any]) -> bool:
        outcome = self.outcome
        # Empty until one says: Azure's first chunk (its prompt filter results) has "" for both.
        if not outcome.response_id and isinstance(doc.get("id"), str):
            outcome.response_id = doc["id"]
        if not outcome.response_model and isinstance(doc.get("model"), str):
            outcome.response_model = doc["model"]
        self._named = _names_known(outcome)
        choices = _list(doc.get("choices"))
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if _is_reason(reason := choice.get("finish_reason")):
                outcome.finish_reasons.append(reason)
            delta = choice.get("delta")
            if self._keep_text and isinstance(delta, dict):
                if isinstance(delta.get("content"), str):
                    outcome.output_text.append(delta["content"])
                if self._keep_tools and delta.get("tool_calls"):
                    self._tool_call_deltas(delta["tool_calls"])
        usage = usage_from(doc)
        if usage is not None:
            outcome.usage = usage
        return not (self._strip and _usage_chunk(doc, choices))

    def _tool_call_deltas(self, deltas: object) -> None:
        """Chat tool call deltas: the first of an index brings its id and name, each one a piece
        of its arguments."""
        for delta in deltas if isinstance(deltas, list) else ():
            if not isinstance(delta, dict):
                continue
            index = delta.get("index")
            index = index if isinstance(index, int) else len(self._calls)
            function = delta.get("function")
            function = function if isinstance(function, dict) else {}
            call = self._calls.get(index)
            if call is None:
                call = self._calls[index] = ToolCall(None, "", "")
                self.outcome.tool_calls.append(call)
            if isinstance(delta.get("id"), str):
                call.id = delta["id"]
            if isinstance(function.get("name"), str):
                call.name += function["name"]
            if isinstance(function.get("arguments"), str):
                call.arguments += function["arguments"]

    def _responses_event(self, doc: Mapping[str, Any]) -> None:
        kind = doc.get("type")
        if kind == "response.output_text.delta" and isinstance(doc.get("delta"), str):
            self.outcome.output_text.append(doc["delta"])
            return
        response = doc.get("response")
        if not isinstance(response, dict):
            return
        outcome = self.outcome
        if isinstance(response.get("id"), str):
            outcome.response_id = response["id"]
        if isinstance(response.get("model"), str):
            outcome.response_model = response["model"]
        self._named = _names_known(outcome)
        if kind != "response.created":
            if kind != "response.in_progress":
                outcome.complete = True
            usage = usage_from(response)
            if usage is not None:
                outcome.usage = usage
            reason = responses_finish_reason(response)
            if reason is not None:
                outcome.finish_reasons.append(reason)
            if self._keep_tools:
                outcome.tool_calls.extend(_response_tool_calls(response))

    def _parse(self, data: bytes) -> Any:
        try:
            return self._loads(data)
        except ValueError:
            return None


class DeferredTap:
    """An SSETap that reads later: `feed` returns at once what SSETap's would and keeps the
    chunk; `read` reads what is kept (SSETap's own code) and fills `outcome`.

    The gateway reads the streams that finished together, after their answers went out
    (`GatewayService.settle`), where the tap's code runs warm, one stream after another: CPU per
    20-event stream (sent in one write) in the running gateway 294.8 µs read at once, 271.0 read
    there, 218.1 with no reading at all (benchmarks/bench_stream_tap.py). Without stripping a
    chunk is forwarded as it came. With `strip_usage` only complete events are forwarded (a
    partial one waits for its end, as in SSETap); an event that may be the usage chunk (a usage
    that is not a compact `null`) is decided at once by SSETap's rule (`_worth_parsing`, then a
    parsed chunk with a usage and no choices), and the `"usage": null` fields go as SSETap
    removes them. What cannot be edited this way (CR line ends, three LFs in a row where an
    event is cut) is read at once, by SSETap, as is a chunk that continues an event. A tap keeps
    at most HELD_MAX bytes and HELD_CHUNKS chunks unread: a long stream is read in pieces of
    that size. A stream that ended before its first read is read whole when it can be
    (`SSETap.read_whole`).
    """

    __slots__ = (
        "_ended",
        "_keep_text",
        "_keep_tools",
        "_kept",
        "_loads",
        "_reader",
        "_rest",
        "_size",
        "_split",
        "_started",
        "_strip",
        "outcome",
    )

    def __init__(
        self,
        loads: Loads,
        *,
        strip_usage: bool = False,
        keep_text: bool = False,
        keep_tool_calls: bool = False,
    ) -> None:
        self._loads = loads
        self._strip = strip_usage
        self._keep_text = keep_text
        self._keep_tools = keep_tool_calls
        self.outcome = Outcome()
        """Filled by `read` (what the stream said up to the last `read`)."""
        self._reader: SSETap | None = None
        """Made at the first read (most streams: in `settle`)."""
        self._kept: list[bytes] = []
        self._size = 0
        self._rest = b""
        """With stripping: the partial event not forwarded yet, when held here."""
        self._split = False
        """With stripping: the tap (read at once) holds a partial event not forwarded yet."""
        self._started = False
        """With stripping: an event was forwarded (the next one is not the stream's first)."""
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        """Keep `chunk` for `read`; return the bytes to forward now (as SSETap.feed)."""
        if not self._strip:
            self._keep(chunk)
            return chunk
        if self._rest or self._split or b"\r" in chunk:
            # An event split over chunks: the tap's own buffer joins them, each byte searched
            # once (joined here, a large event would be copied and searched again per chunk).
            return self._read_now(chunk)
        data = chunk
        whole = data.rfind(b"\n\n") + 2
        if whole >= 3 and data[whole - 3] == _LF:
            return self._read_now(chunk)
        if whole < 2:
            out = b""
        else:
            at = data.find(b'"usage"', 0, whole)
            if at < 0:
                out = data if whole == len(data) else data[:whole]
            else:
                stripped = self._stripped(data, whole, at)
                if stripped is None:
                    return self._read_now(chunk)
                out = stripped
            self._started = True
        self._rest = data[whole:] if whole > 1 else data
        self._keep(chunk)
        return out

    def finish(self) -> bytes:
        """The stream ended: return whatever partial event is still held (as SSETap.finish)."""
        self._ended = True
        if self._split:  # the tap holds it: it reads it as it returns it
            self._split = False
            self._read_kept()
            return self._tap.finish()
        rest, self._rest = self._rest, b""
        return rest

    def read(self) -> Outcome:
        """Read what was kept (and, once the stream ended, its last partial event); the
        outcome so far. Safe to call again: only what came since is read."""
        if self._ended and self._reader is None and self._kept:  # the whole stream, at once
            body = self._kept[0] if len(self._kept) == 1 else b"".join(self._kept)
            if self._tap.read_whole(body):
                self._kept, self._size = [], 0
                return self.outcome
        self._read_kept()
        if self._ended:
            self._tap.finish()
        return self.outcome

    def _keep(self, chunk: bytes) -> None:
        self._kept.append(chunk)
        self._size += len(chunk)
        if self._size > HELD_MAX or len(self._kept) >= HELD_CHUNKS:
            self._read_kept()

    @property
    def _tap(self) -> SSETap:
        if self._reader is None:
            self._reader = SSETap(
                self._loads,
                strip_usage=self._strip,
                keep_text=self._keep_text,
                keep_tool_calls=self._keep_tools,
                outcome=self.outcome,
            )
        return self._reader

    def _read_kept(self) -> None:
        """Read what was kept. What it forwarded went out already, so the tap reads it without
        stripping (the same outcome, no output built)."""
        kept, self._kept, self._size = self._kept, [], 0
        tap = self._tap
        tap._strip = False
        for chunk in kept:
            tap.feed(chunk)
        tap._strip = self._strip

    def _read_now(self, chunk: bytes) -> bytes:
        """Read what was kept and `chunk` now, forwarding what SSETap forwards."""
        self._read_kept()
        tap = self._tap
        out = tap.feed(chunk)
        self._rest = b""  # held by the tap from now on, if any
        self._split = tap.holds_partial
        self._started = tap.events > 0
        return out

    def _stripped(self, data: bytes, whole: int, at: int) -> bytes | None:
        """`data[:whole]` (whole LF-ended events, the first `"usage"` at `at`) as
        SSETap(strip_usage=True) forwards it: without the usage chunk and the `"usage": null`
        fields; None when an event to leave out does not follow an LF LF alone (its start
        depends on reading from the front). A `"usage"` that is not a compact null may be the
        usage chunk's: its event is decided by `_usage_only`."""
        parts: list[bytes] = []
        done = 0
        at, nulls = _usage_value(data, at, whole)  # nulls: usage nulls to remove
        while at >= 0:
            sep = data.rfind(b"\n\n", 0, at)
            start = sep + 2 if sep >= 0 else 0
            end = data.find(b"\n\n", at) + 2
            if self._usage_only(data[start : end - 2], first=start == 0 and not self._started):
                if start >= 3 and data[start - 3] == _LF:
                    return None
                parts.append(data[done:start])
                done = end
            else:
                nulls = True
            at, skipped = _usage_value(data, data.find(b'"usage"', end, whole), whole)
            nulls |= skipped
        if not parts:
            out = data[:whole] if whole < len(data) else data
        else:
            parts.append(data[done:whole])
            out = b"".join(parts)
        return _without_usage_null(out) if nulls else out

    def _usage_only(self, event: bytes, *, first: bool) -> bool:
        """Whether SSETap(strip_usage=True) leaves `event` out, as its `_observe` decides: a
        chat chunk worth parsing, with a usage and no choices. `first`: the stream's first
        event (SSETap parses every event until the stream named its id and model, which this
        tap, reading later, cannot know; it only matters for a chunk whose usage has a value
        and that also says `"usage": null` and a null finish reason, which none sends)."""
        if (
            event.startswith(b"data: {")
            and b"\n" not in event
            and len(event) <= _WHOLE_PROBE
            and b'"finish_reason"' not in event
        ):  # one data line with no finish reason (the usage chunk): always worth parsing
            data = event[6:]
            if b'"choices"' not in data:
                return False
        elif len(event) > _WHOLE_PROBE:  # classified by its ends: SSETap's code, on its own tap
            tap = SSETap(self._loads, strip_usage=True, keep_text=self._keep_text)
            tap._named = not first
            return not tap._observe(event)
        else:
            found = _data(event)
            if (
                found is None
                or b'"choices"' not in found
                or not _worth_parsing(found, first=first, keep_text=self._keep_text)
            ):
                return False
            data = found
        try:
            doc = self._loads(data)
        except ValueError:
            return False
        return isinstance(doc, dict) and _usage_chunk(doc, _list(doc.get("choices")))


def _usage_value(data: bytes, at: int, end: int) -> tuple[int, bool]:
    """From a `"usage"` at `at` (or -1, none): where the first one at or after it that is not a
    compact null starts, before `end` (-1: none), and whether a compact null came first (the
    nulls after it are passed in one search)."""
    if at < 0 or not data.startswith(b":null", at + 7):
        return at, False
    found = _USAGE_VALUE.search(data, at + 12, end)
    return (-1 if found is None else found.start()), True


def _worth_parsing(probe: bytes, *, first: bool, keep_text: bool) -> bool:
    """Whether a chat chunk's data (or its ends, `probe`) may say more than its text pieces:
    the stream's first, text to keep, no finish reason or one that is not null (a choice's,
    beside others' nulls), a usage that is not null."""
    return (
        first
        or keep_text
        or b'"finish_reason"' not in probe
        or _FINISH_SET.search(probe) is not None
        or (b'"usage"' in probe and not _USAGE_NULL.search(probe))
    )


def _plain_delta(event: bytes) -> bool:
    """A plain chat delta: one `data:` line of a JSON object with choices, every finish reason
    `"finish_reason":null`, and no usage but a `,"usage":null` (the bulk of a chat stream; an
    event without its LF LF, from a chunk that holds no CR)."""
    return (
        event.startswith(b"data: {")
        and len(event) <= _WHOLE_PROBE
        and 0 < event.count(b'"finish_reason":null') == event.count(b'"finish_reason"')
        and b'"choices"' in event
        and (b'"usage"' not in event or event.count(b'"usage"') == event.count(b',"usage":null'))
        and b"\n" not in event
    )


def _text_pieces(data: bytes) -> int:
    """Pieces of streamed output in `data` (`Outcome.content_chunks`): its chat `content":"`
    keys (`reasoning_content` too), tool call `"arguments":"` and Responses `"delta":"` (text
    and arguments alike)."""
    return data.count(b'content":"') + data.count(b'"arguments":"') + data.count(b'"delta":"')


def _without_usage_null(event: bytes) -> bytes:
    """The event without the `"usage": null` fields a chunk carries only because usage was asked
    for (the compact form by `replace`, any other spacing by the regex)."""
    if b'"usage"' not in event:
        return event
    event = event.replace(b',"usage":null', b"")
    return _USAGE_NULL_FIELD.sub(b"", event) if b'"usage"' in event else event


def event_end(buffer: bytes | bytearray, pos: int) -> int:
    """Where the first event at or after `pos` ends (just past its empty line), or -1.

    An event ends at an empty line; a line ends with CRLF, LF or a lone CR (the SSE standard,
    html.spec.whatwg.org, "Parsing an event stream"). Line ends are found with `find` (memchr),
    so a long line costs no Python step per byte. A CR at the very end of what has arrived counts
    as a line end: should an LF follow, it only adds an empty line to the next event, which SSE
    readers skip.
    """
    n = len(buffer)
    find = buffer.find
    while True:
        lf = find(b"\n", pos)
        cr = find(b"\r", pos, lf if lf >= 0 else n)
        i = cr if cr >= 0 else lf
        if i < 0:
            return -1
        j = i + 2 if buffer[i] == _CR and i + 1 < n and buffer[i + 1] == _LF else i + 1
        if j >= n:
            return -1
        second = buffer[j]
        if second == _LF:
            return j + 1
        if second == _CR:
            return j + 2 if j + 1 < n and buffer[j + 1] == _LF else j + 1
        pos = j


def _data(event: bytes) -> bytes | None:
    """The event's data field (several data lines joined by newlines), or None."""
    line = event.rstrip(b"\n")
    if line.startswith(b"data:") and b"\n" not in line and b"\r" not in line:
        return line[5:].lstrip(b" ")  # one data line, the common case
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else b"\n".join(lines)


def _response_text(doc: Mapping[str, Any]) -> list[str]:
    texts = []
    for item in _list(doc.get("output")):
        if isinstance(item, dict):
            for part in _list(item.get("content")):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    return texts
