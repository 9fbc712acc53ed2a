"""The neutral request and response that every API surface and every adapter share.

Surfaces (native, OpenAI, Anthropic) translate into these; adapters translate
out of them into each provider's wire format, so any surface can reach any
provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Role = Literal["user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(slots=True, frozen=True)
class Image:
    """An image in a user turn: base64 ``data`` of ``media_type``, or a ``url``."""

    media_type: str
    data: str | None = None
    url: str | None = None

    @property
    def data_url(self) -> str:
        """As OpenAI's protocol takes it: the URL, or the data as a ``data:`` URL."""
        return self.url or f"data:{self.media_type};base64,{self.data}"


#: What an image counts for in the prompt estimate, in UTF-8 bytes (about 1,600 tokens:
#: a large image on Anthropic's and OpenAI's reckoning).
IMAGE_BYTES = 4800


@dataclass(slots=True)
class Message:
    """One turn. ``content`` is text; images, tool calls and tool results ride alongside."""

    role: Role
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # for role "tool": which call this answers
    images: list[Image] = field(default_factory=list)


@dataclass(slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema
    strict: bool | None = None  # OpenAI's: arguments must follow the schema exactly


@dataclass(slots=True)
class ChatRequest:
    messages: list[Message]
    system: str | None = None
    model: str | None = None  # the name a client asked for, or None to let the router choose
    task_type: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None  # "auto" | "none" | "required" | {"name": ...}
    user: str | None = None
    #: The client's fields the neutral request does not model (``response_format``,
    #: ``seed``, ``thinking``, ...), in the protocol it spoke: forwarded as sent to a
    #: provider of that protocol. Another protocol's provider is a candidate only when
    #: ``drop_params`` says they may be left out.
    params: dict[str, Any] = field(default_factory=dict)
    params_protocol: str | None = None
    drop_params: bool = False
    #: A stream that may be relayed as the provider sent it: the client's protocol,
    #: set by its surface. A provider of that protocol then sends ``Relayed`` events.
    relay: str | None = None
    #: The conversation as the client wrote it (``messages``, and Anthropic's
    #: ``system``), in ``params_protocol``: what a provider of that protocol gets, so
    #: fields inside content blocks (``cache_control``, thinking blocks, image detail)
    #: reach it as sent. Other providers get the neutral messages.
    raw_messages: list[Any] | None = None
    raw_system: Any = None
    #: Only its tokens are counted (``count_tokens``): any chat model may count it,
    #: whatever fields or capabilities the request would need of one to be answered.
    count_only: bool = False
    #: The surface keeps the whole answer (a message thread): a stream is read in full
    #: (``Streaming.result``) rather than relayed.
    collect: bool = False
    #: A stream that breaks after text was sent continues on another candidate (the
    #: ``X-Switchyard-Continue-Streams`` header); None: as the table says.
    continue_streams: bool | None = None
    #: The last message is the assistant's answer so far, which the model is to continue
    #: (a stream continued on another provider): each protocol asks for that its own way.
    prefill: bool = False
    #: UTF-8 bytes a provider of the client's protocol reads that the neutral messages
    #: leave out (Anthropic's thinking blocks, handed back as they came).
    hidden_bytes: int = 0
    #: Anthropic's ``anthropic-beta`` features the client asked for: sent on to an
    #: Anthropic provider; to another, each that changes what is generated is a field
    #: of the client's protocol like any other (``asked``).
    betas: list[str] = field(default_factory=list)

    def asked(self) -> dict[str, Any]:
        """The client's fields a provider of another protocol must take or drop: its
        unmodelled body fields, and its betas as ``anthropic-beta.<name>``."""
        if not self.betas:
            return self.params
        changing = [b for b in self.betas if b not in HINTS and b not in SERVED]
        return self.params | {f"{BETA_FIELD}.{b}": True for b in changing}

    def text_size(self) -> int:
        """UTF-8 bytes of everything the model reads: the basis of the token estimate."""
        n = utf8_size(self.system) if self.system else 0
        for m in self.messages:
            n += utf8_size(m.content) + 16 + IMAGE_BYTES * len(m.images)
            for c in m.tool_calls:
                n += len(c.name) + len(c.arguments)
        for t in self.tools:
            n += len(t.name) + len(t.description) + len(orjson.dumps(t.parameters)) + 200
        return n + self.hidden_bytes


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class ChatResult:
    content: str
    finish_reason: FinishReason
    usage: Usage
    upstream_model: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    upstream_id: str | None = None
    #: The provider's token log probabilities as its protocol wrote them (OpenAI's
    #: ``choices[0].logprobs``), for a client of that protocol; None when not asked.
    logprobs: Any = None


@dataclass(slots=True)
class TextDelta:
    text: str
    logprobs: Any = None  # as ChatResult.logprobs, for this piece


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call; ``index`` orders calls, ``id``/``name`` arrive first."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True)
class Finish:
    """The last event of a stream: why it stopped and what it used."""

    reason: FinishReason
    usage: Usage | None


@dataclass(slots=True)
class Relayed:
    """Server-sent events as the provider wrote them (whole events), for a client of the
    provider's protocol; the relay reads only what accounting needs (``Finish``).
    ``usage``: where in ``data`` the usage event is that the router asked for itself,
    which a client that did not ask for it does not get."""

    data: bytes
    usage: tuple[int, int] | None = None
    text_bytes: int = 0  # about how much text the events hold (for a usage estimate)
    #: ``data`` ends with the stream's end marker: nothing the client gets follows it.
    last: bool = False


class Flush:
    """What arrived so far may go to the client together: the adapters say so after
    each read from the provider, so a stream is written one read at a time, not one
    event at a time (see ``http.completions._sse``); a read relayed as one ``Relayed``
    block is written as it comes, with none after it. ``FLUSH`` is the one instance."""

    __slots__ = ()


FLUSH = Flush()

StreamEvent = TextDelta | ToolCallDelta | Finish | Relayed | Flush


#: The request header, and the prefix of the field each beta stands for.
BETA_FIELD = "anthropic-beta"
#: Betas that change nothing a provider of another protocol could get wrong: caching and
#: counting hints, and message threads, which Switchyard holds itself (never sent on).
HINTS = frozenset(
    {
        "prompt-caching-2024-07-31",
        "extended-cache-ttl-2025-04-11",
        "token-counting-2024-11-01",
        "token-efficient-tools-2025-02-19",
        "fine-grained-tool-streaming-2025-05-14",
    }
)
#: Betas Switchyard serves itself, for every provider: not sent on.
SERVED = frozenset({"message-threads-2026-08-12"})


def utf8_size(text: str) -> int:
    """``len(text.encode())``, without making the bytes when the text is ASCII."""
    return len(text) if text.isascii() else len(text.encode())


def estimate_tokens(utf8_bytes: int) -> int:
    """A conservative token estimate from UTF-8 size.

    English runs near four characters a token; other scripts use more bytes per
    character and about as many tokens. Three bytes a token leans high, which
    is the safe side for a context-window check.
    """
    return utf8_bytes // 3 + 8
