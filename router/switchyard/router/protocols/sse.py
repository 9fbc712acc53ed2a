"""Server-sent events: as the surfaces write them to clients, and relayed as a provider
of the client's own protocol wrote them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from switchyard.router.core.chat import Finish, Relayed, StreamEvent
from switchyard.router.errors import UpstreamError


class StreamEncoder(Protocol):
    """Turns one stream's neutral events into one protocol's SSE bytes."""

    #: Response headers particular to this protocol (beyond the SSE ones).
    headers: dict[str, str]

    def open(self) -> bytes:
        """What goes out before the first event (may be empty)."""

    def event(self, event: StreamEvent) -> bytes:
        """One event's bytes (may be empty)."""

    def error(self, body: dict[str, Any]) -> bytes:
        """An error after the stream began, as this protocol reports it."""

    def close(self) -> bytes:
        """What ends a stream that finished."""


def named(name: bytes, data: Any) -> bytes:
    """``event: name`` with its JSON data."""
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def data_only(data: Any) -> bytes:
    """A ``data:`` line with JSON, no event name (OpenAI's style)."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


class WholeEvents:
    """Bytes as they arrive → whole server-sent events (through their blank line); a
    partial event waits for the rest. CRLF line ends become LF."""

    __slots__ = ("rest",)

    def __init__(self) -> None:
        self.rest = b""

    def take(self, block: bytes) -> bytes:
        data = self.rest + block if self.rest else block
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self.rest = data
            return b""
        self.rest = data[end + 2 :]
        return data[: end + 2]


_DONE = b"data: [DONE]\n\n"


def _first_broken(whole: bytes, events: int) -> int:
    """Where the first event of ``whole`` (``events`` of them) whose data is not JSON
    begins; -1: none.

    Relayed content is not parsed, but a provider's garbage must not reach the client
    as if it were an answer (or commit a stream to a provider that sends it). Counts in
    C tell that every event's data ends as a JSON object does, or is ``[DONE]``; only
    when they disagree is each event read.
    """
    # The end marker ends a stream, so a block holding it nearly always ends with it: a
    # count of one without the scan. Two markers then look like one, and the events are
    # read one by one, as for any disagreement.
    done = 1 if whole.endswith(_DONE) else whole.count(_DONE)
    if whole.count(b"}\n\n") + done == events:
        return -1
    pos = 0
    for event in whole.split(b"\n\n")[:-1]:
        data = b"\n".join(
            line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if data and data != b"[DONE]":
            try:
                orjson.loads(data)
            except orjson.JSONDecodeError:
                return pos
        pos += len(event) + 2
    return -1


class Renamer:
    """Rewrites a relayed stream's id and model to the router's, once it has read them
    from the stream's first event that names them (a cheap bytes replace after that).

    ``ids`` (given with each block) reads a block's first event naming an id and a
    model and returns them, or None.
    """

    __slots__ = ("_id", "_model", "_swaps")

    def __init__(self, our_id: str, our_model: str) -> None:
        self._id = our_id
        self._model = our_model
        self._swaps: list[tuple[bytes, bytes]] | None = None

    def __call__(self, data: bytes, ids: Callable[[bytes], tuple[str, str] | None]) -> bytes:
        swaps = self._swaps
        if swaps is None:
            found = ids(data)
            if found is None:
                return data
            swaps = self._swaps = []
            for key, theirs, ours in (("id", found[0], self._id), ("model", found[1], self._model)):
                if theirs and theirs != ours:
                    name = b'"' + key.encode() + b'":'
                    swaps.append((name + orjson.dumps(theirs), name + orjson.dumps(ours)))
        for theirs_b, ours_b in swaps:
            # ``replace`` of a needle by one of another length scans twice (a count,
            # then the copy); a split and a join scan once.
            data = ours_b.join(data.split(theirs_b))
        return data


class LineDecoder(Protocol):
    """A protocol's stream decoder, fed one line at a time."""

    @property
    def done(self) -> bool:
        """The protocol's end-of-stream marker was read."""

    def feed(self, line: bytes) -> list[StreamEvent]: ...

    def incomplete(self) -> UpstreamError:
        """The error for a stream that ended before its end marker."""


class BlockReader(Protocol):
    """A provider's stream, fed the bytes as they arrive (``LineReader`` or
    ``EventRelay``). An error the provider reports mid-stream is kept in ``failure``,
    to raise once the events before it are passed on."""

    failure: UpstreamError | None

    @property
    def done(self) -> bool: ...

    def feed(self, block: bytes) -> list[StreamEvent]: ...

    def incomplete(self) -> UpstreamError: ...


_NOTHING: list[StreamEvent] = []
#: Content events a relayed stream's envelope is measured on (``EventRelay._text_bytes``).
_MEASURED = 2


class LineReader:
    """A ``LineDecoder`` fed bytes as they arrive: whole lines go to it, a partial line
    waits for the rest."""

    def __init__(self, decoder: LineDecoder) -> None:
        self.decoder = decoder
        self.rest = b""
        self.failure: UpstreamError | None = None

    @property
    def done(self) -> bool:
        return self.decoder.done

    def incomplete(self) -> UpstreamError:
        return self.decoder.incomplete()

    def feed(self, block: bytes) -> list[StreamEvent]:
        *lines, self.rest = (self.rest + block if self.rest else block).split(b"\n")
        events: list[StreamEvent] = []
        try:
            for line in lines:
                if line.strip():
                    events += self.decoder.feed(line)
                    if self.decoder.done:
                        break
        except UpstreamError as exc:
            self.failure = exc
        return events


class EventRelay:
    """A provider's SSE bytes → ``Relayed`` blocks as sent, for a client of its protocol.

    Content passes unread. Only the events that hold one of ``marks`` (what ends a
    stream, or reports an error) are read, one by one through the protocol's decoder,
    so accounting, the breaker and error handling see what they always did. A mark is
    written with quotes, which text inside a JSON string cannot show unescaped.
    ``usage_only`` says which event is the usage the router asked for itself;
    ``text_of`` reads an event's text, to estimate output for a provider that reports
    no usage.
    """

    def __init__(
        self,
        decoder: LineDecoder,
        marks: tuple[bytes, ...],
        usage_only: Callable[[bytes], bool],
        text_of: Callable[[Any], str],
    ) -> None:
        self.decoder = decoder
        self.marks = marks
        self.usage_only = usage_only
        self.text_of = text_of
        self.events = WholeEvents()
        self.envelope = 0  # bytes of a content event around its text, once measured
        self._measured = 0  # content events the envelope was measured on
        #: An error the provider reported mid-stream, raised after what came before it.
        self.failure: UpstreamError | None = None

    @property
    def done(self) -> bool:
        return self.decoder.done

    def incomplete(self) -> UpstreamError:
        return self.decoder.incomplete()

    def _first_mark(self, data: bytes) -> int:
        # Called for every event a provider sends: a plain loop, no list or generator.
        first = -1
        for mark in self.marks:
            at = data.find(mark)
            if at >= 0 and (first < 0 or at < first):
                first = at
        return first

    def feed(self, block: bytes) -> list[StreamEvent]:
        if (
            block.endswith(b"}\n\n")
            and block.find(b"\n") == len(block) - 2
            and not self.events.rest
        ):
            # A read of one whole event, one line whose data ends as a JSON object does
            # (nearly every read of a stream of OpenAI's protocol): no line end to mend,
            # nothing waiting before it, no event to count or to check. Its first newline
            # (memchr) is found in a third of the time of any of the scans below.
            at = self._first_mark(block)
            if at >= 0:
                return self._marked(block, 1, at)
            if self._measured == _MEASURED:
                text = len(block) - self.envelope  # ``_text_bytes`` of one event
                return [Relayed(block, None, text if text > 0 else 0)]
            return [Relayed(block, text_bytes=self._text_bytes(block, 1))]
        whole = self.events.take(block)
        if not whole:
            return _NOTHING
        events = whole.count(b"\n\n")  # the scans below share it
        broken = _first_broken(whole, events)
        if broken >= 0:
            return self._broken(whole, broken)
        return self._relayed(whole, events)

    def _broken(self, whole: bytes, broken: int) -> list[StreamEvent]:
        """A block with an event whose data is not JSON, at ``broken``: through the
        decoder from there, for the protocol's own error; what came before passes."""
        try:
            for line in whole[broken:].split(b"\n"):
                if line.startswith(b"data:"):
                    self.decoder.feed(line)
        except UpstreamError as exc:
            self.failure = exc
        whole = whole[:broken]
        if not whole:
            return _NOTHING
        return self._relayed(whole, whole.count(b"\n\n"))

    def _relayed(self, whole: bytes, events: int) -> list[StreamEvent]:
        """Whole events (``events`` of them), passed on as they came, and from the first
        one that holds a mark on, read."""
        at = self._first_mark(whole)
        if at < 0:
            return [Relayed(whole, text_bytes=self._text_bytes(whole, events))]
        return self._marked(whole, events, at)

    def _marked(self, whole: bytes, events: int, at: int) -> list[StreamEvent]:
        """A block with a mark at ``at``: the events before the one holding it pass
        unread, and from it on each is read through the decoder."""
        # The content before the event holding the first mark passes unread.
        start = whole.rfind(b"\n\n", 0, at)
        pos = 0 if start < 0 else start + 2
        # Its events: those of the block less those from ``pos`` on (a shorter count).
        text = self._text_bytes(whole[:pos], events - whole.count(b"\n\n", pos)) if pos else 0
        usage: tuple[int, int] | None = None
        finish: list[StreamEvent] = []
        for event in whole[pos:].split(b"\n\n")[:-1]:
            size = len(event) + 2
            if self._first_mark(event) < 0:
                text += self._text_bytes(event + b"\n\n")
            else:
                try:
                    for line in event.split(b"\n"):
                        if line:
                            finish += [e for e in self.decoder.feed(line) if type(e) is Finish]
                except UpstreamError as exc:
                    self.failure = exc
                    return [Relayed(whole[:pos], text_bytes=text)] if pos else _NOTHING
                if self.usage_only(event):
                    usage = (pos, pos + size)
            pos += size
            if finish:
                break  # the end marker: nothing after it counts
        return [Relayed(whole[:pos], usage=usage, text_bytes=text, last=bool(finish)), *finish]

    def _text_bytes(self, events: bytes, count: int | None = None) -> int:
        """About how much text ``events`` (``count`` of them, when known) hold: their
        size less each event's envelope.

        The envelope is measured on the stream's first ``_MEASURED`` events with text,
        keeping the smallest: a first event often carries more than the rest (OpenAI's,
        vLLM's and llama.cpp's name the role), and an envelope taken from it alone made
        every later delta shorter than that difference count as no text at all."""
        if self._measured < _MEASURED:
            # Event by event from the start, not the whole block split: the first few
            # with text are all it reads.
            start = 0
            while (end := events.find(b"\n\n", start)) >= 0:
                event = events[start:end]
                start = end + 2
                data = event[event.find(b"data:") + 5 :]
                try:
                    text = self.text_of(orjson.loads(data))
                except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError):
                    continue
                if text:
                    size = max(len(event) + 2 - len(text.encode()), 1)
                    self.envelope = min(self.envelope, size) if self.envelope else size
                    self._measured += 1
                    if self._measured == _MEASURED:
                        break
            if not self.envelope:
                return 0
        if count is None:
            count = events.count(b"\n\n")
        return max(len(events) - count * self.envelope, 0)
