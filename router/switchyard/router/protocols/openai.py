"""OpenAI's chat-completions protocol, both ways.

Inbound: the OpenAI-compatible surface (``POST /v1/chat/completions``), so the official
openai SDK works unchanged, streaming included. Outbound: OpenAI itself, Azure OpenAI
and vLLM (``baseUrl`` as the openai SDK takes it, e.g. ``https://api.openai.com/v1``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from switchyard.router.core.chat import (
    ChatRequest,
    ChatResult,
    Finish,
    FinishReason,
    Image,
    Message,
    Relayed,
    StreamEvent,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from switchyard.router.errors import (
    BadRequest,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from switchyard.router.protocols.shared import Integral, error_json, function_tools, output_schema
from switchyard.router.protocols.sse import EventRelay, Renamer, data_only

if TYPE_CHECKING:
    from switchyard.router.core.accounting import Completed
    from switchyard.router.core.streaming import Streaming

#: OpenAI's ``finish_reason`` → the neutral one. The neutral names are OpenAI's, so the
#: other direction is the identity.
FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}

#: Model names that let the router choose (the task then comes from X-Switchyard-Task).
AUTO_MODELS = frozenset({"auto", "switchyard", "switchyard-auto"})


def finish_reason(value: Any) -> FinishReason:
    return FINISH.get(value, "stop") if isinstance(value, str) else "stop"


def usage_json(u: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


# -- inbound: the request a client sends ------------------------------------------------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ContentPart(_Loose):
    type: Literal["text"]
    text: str


class ImageURL(_Loose):
    url: str = Field(pattern=r"^(https?://.+|data:image/[A-Za-z0-9.+-]+;base64,.+)$")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Loose):
    type: Literal["image_url"]
    image_url: ImageURL


#: What a user turn may hold: text and images (other parts are refused by name).
UserPart = Annotated[ContentPart | ImagePart, Field(discriminator="type")]
Content = str | list[ContentPart]


class FunctionCall(_Loose):
    name: str = Field(min_length=1)
    arguments: str = "{}"


class ToolCallIn(_Loose):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Loose):
    role: Literal["system", "developer"]
    content: Content


class UserMessage(_Loose):
    role: Literal["user"]
    content: str | list[UserPart]


class AssistantMessage(_Loose):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCallIn] | None = None


class ToolMessage(_Loose):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]

_NOT_BLANK: JsonDict = {"type": "string", "pattern": r"\S"}
#: What ``to_chat_request`` asks of the conversation, as JSON Schema: some message
#: other than a system one that says something (text that is not blank, or tool calls).
_SAYS_SOMETHING: JsonDict = {
    "anyOf": [
        {
            "required": ["role", "content"],
            "properties": {
                "role": {"enum": ["user", "assistant", "tool"]},
                "content": {
                    "anyOf": [
                        _NOT_BLANK,
                        {
                            "type": "array",
                            "contains": {
                                "anyOf": [
                                    {"required": ["text"], "properties": {"text": _NOT_BLANK}},
                                    {
                                        "required": ["type"],
                                        "properties": {"type": {"const": "image_url"}},
                                    },
                                ]
                            },
                        },
                    ]
                },
            },
        },
        {
            "required": ["role", "tool_calls"],
            "properties": {
                "role": {"const": "assistant"},
                "tool_calls": {"type": "array", "minItems": 1},
            },
        },
    ]
}


class FunctionDef(_Loose):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolDef(_Loose):
    type: Literal["function"]
    function: FunctionDef


class FunctionName(_Loose):
    name: str = Field(min_length=1)


class NamedToolChoice(_Loose):
    type: Literal["function"] = "function"
    function: FunctionName


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatBody(_Loose):
    """Fields it does not name are kept (``model_extra``) and forwarded as sent."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=253)
    messages: list[ChatMessage] = Field(
        min_length=1, max_length=10_000, json_schema_extra={"contains": _SAYS_SOMETHING}
    )
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), Integral] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_000_000), Integral] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    n: Annotated[int, Field(ge=1, le=1), Integral] | None = None
    user: str | None = None


def _text(content: str | list[ContentPart] | list[UserPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.text for part in content if isinstance(part, ContentPart))


def image_of(url: str, where: str) -> Image:
    """An image as a ``data:`` URL or an http(s) URL; anything else is refused at ``where``."""
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        media = head[5:].removesuffix(";base64")
        if sep and head.endswith(";base64") and media.startswith("image/") and data:
            return Image(media, data=data)
        raise BadRequest(
            f"{where}: a data URL must be data:image/<type>;base64,<data>", field=where
        )
    if url.startswith(("https://", "http://")):
        return Image("", url=url)
    raise BadRequest(f"{where}: an http(s) or data: URL", field=where)


def _images(content: str | list[UserPart], i: int) -> list[Image]:
    if isinstance(content, str):
        return []
    return [
        image_of(p.image_url.url, f"messages[{i}].content[{j}].image_url.url")
        for j, p in enumerate(content)
        if isinstance(p, ImagePart)
    ]


def to_chat_request(body: ChatBody, task: str | None) -> ChatRequest:
    system: list[str] = []
    messages: list[Message] = []
    for i, m in enumerate(body.messages):
        content = m.content
        plain = isinstance(content, str)  # most turns: no parts to look through
        text = content if isinstance(content, str) else _text(content)
        if isinstance(m, SystemMessage):
            system.append(text)
        elif isinstance(m, ToolMessage):
            messages.append(Message("tool", text, tool_call_id=m.tool_call_id))
        elif isinstance(m, AssistantMessage):
            calls = [
                ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()
            ]
            messages.append(Message("assistant", text, tool_calls=calls))
        elif plain:
            messages.append(Message("user", text))
        else:
            messages.append(Message("user", text, images=_images(m.content, i)))
    # The rule _SAYS_SOMETHING states in the OpenAPI document.
    if not messages:
        raise BadRequest("messages: at least one user message is required", field="messages")
    for said in messages:
        if said.content.strip() or said.tool_calls or said.images:
            break
    else:
        raise BadRequest("messages: the prompt is empty", field="messages")
    choice: str | dict[str, Any] | None = None
    if isinstance(body.tool_choice, NamedToolChoice):
        choice = {"name": body.tool_choice.function.name}
    else:
        choice = body.tool_choice
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or ())
    return ChatRequest(
        messages=messages,
        system="\n\n".join(system) or None,
        model=None if body.model in AUTO_MODELS else body.model,
        task_type=task,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        stream=body.stream,
        tools=[
            Tool(t.function.name, t.function.description, t.function.parameters, t.function.strict)
            for t in body.tools
        ]
        if body.tools
        else [],
        tool_choice=choice,
        user=body.user,
        params=_params(body),
        params_protocol="openai",
    )


def _params(body: ChatBody) -> dict[str, Any]:
    """The fields forwarded as sent; ``response_format`` checked, as others translate it."""
    params = dict(body.__pydantic_extra__ or {})  # ``model_extra``, less a property's call
    fmt = params.get("response_format")
    if fmt is None:
        return params
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise BadRequest(
            "response_format.type: 'text', 'json_object' or 'json_schema'",
            field="response_format.type",
        )
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest(
                "response_format.json_schema.name is required",
                field="response_format.json_schema.name",
            )
        if not isinstance(spec.get("schema", {}), dict):
            raise BadRequest(
                "response_format.json_schema.schema: must be a JSON Schema object",
                field="response_format.json_schema.schema",
            )
    return params


# -- inbound: the answer a client receives ------------------------------------------------
def completion_json(done: Completed, completion_id: str, created: int) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    r = done.result
    message: dict[str, Any] = {"role": "assistant", "content": r.content, "refusal": None}
    if r.tool_calls:
        message["content"] = r.content or None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in r.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": done.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": r.logprobs,
                "finish_reason": r.finish_reason,
            }
        ],
        "usage": usage_json(r.usage),
        "system_fingerprint": None,
    }


class ChunkEncoder:
    """Neutral events → ``chat.completion.chunk`` events, then ``data: [DONE]``."""

    def __init__(
        self,
        streaming: Streaming,
        completion_id: str,
        created: int,
        include_usage: bool,
        headers: dict[str, str],
    ) -> None:
        self.streaming = streaming
        self.include_usage = include_usage
        self.headers = headers
        self.reason: FinishReason = "stop"
        #: The provider's own events, relayed (same protocol): only id and model change.
        self.relayed = streaming.relayed
        self.rename = Renamer(completion_id, streaming.model)
        self.head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": streaming.model,
            "system_fingerprint": None,
        }
        # Text deltas are most of a stream: splice them into pre-encoded bytes.
        text_head = self.chunk({"content": ""})
        cut = text_head.index(b'"content":""') + len(b'"content":')
        self.text_prefix, self.text_suffix = text_head[:cut], text_head[cut + 2 :]

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return data_only(
            self.head
            | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        )

    def open(self) -> bytes:
        if self.relayed:
            return b""
        return self.chunk({"role": "assistant", "content": ""})

    def event(self, event: StreamEvent) -> bytes:
        if type(event) is Relayed:
            data = event.data
            if event.usage is not None and not self.include_usage:
                a, b = event.usage  # the router asked for it; the client did not
                data = data[:a] + data[b:]
            return self.rename(data, stream_ids)
        if type(event) is TextDelta:
            if event.logprobs is None:
                return self.text_prefix + orjson.dumps(event.text) + self.text_suffix
            return data_only(
                self.head
                | {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": event.text},
                            "logprobs": event.logprobs,
                            "finish_reason": None,
                        }
                    ]
                }
            )
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
                call["function"] = {"name": event.name or "", "arguments": event.arguments}
            else:
                call["function"] = {"arguments": event.arguments}
            return self.chunk({"tool_calls": [call]})
        if isinstance(event, Finish):
            self.reason = event.reason
        return b""

    def error(self, body: dict[str, Any]) -> bytes:
        return data_only(body)

    def close(self) -> bytes:
        if self.relayed:
            return b""  # the provider's [DONE] was relayed
        out = self.chunk({}, self.reason)
        if self.streaming.broken:
            # Marked for clients that care; the SDKs keep unknown fields as extras.
            last = orjson.loads(out[6:])
            last["switchyard"] = {"continued_from": self.streaming.continued_from}
            out = data_only(last)
        if self.include_usage:
            out += data_only(self.head | {"choices": [], "usage": usage_json(self.streaming.usage)})
        return out + b"data: [DONE]\n\n"


# -- outbound: what Switchyard sends an OpenAI-protocol provider ---------------------------
def messages_of(req: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": req.system})
    for m in req.messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        elif m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            parts += [{"type": "image_url", "image_url": {"url": i.data_url}} for i in m.images]
            out.append({"role": m.role, "content": parts})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def tool_choice(value: str | dict[str, Any] | None) -> Any:
    if isinstance(value, dict):
        return {"type": "function", "function": {"name": value["name"]}}
    return value


#: Asked after the answer so far when a stream is continued on a provider whose API has
#: no way to continue an assistant message.
CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, as if "
    "nothing had interrupted it: do not repeat any of it, and add nothing before the "
    "continuation."
)


def request_body(
    req: ChatRequest, model_name: str, max_tokens: int, max_tokens_field: str
) -> dict[str, Any]:
    """A chat-completions request body (``model`` included; Azure drops it)."""
    body: dict[str, Any] = {
        "model": model_name,
        # The client's own conversation when it spoke this protocol (see ChatRequest).
        "messages": req.raw_messages
        if req.raw_messages is not None and req.params_protocol == "openai"
        else messages_of(req),
        max_tokens_field: max_tokens,
    }
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop"] = req.stop
    if req.tools:
        body["tools"] = function_tools(req.tools, strict=True)
        if req.tool_choice is not None:
            body["tool_choice"] = tool_choice(req.tool_choice)
    if req.user:
        body["user"] = req.user
    if req.params and req.params_protocol == "openai":
        # The client's other fields, as sent; what the router set above stays.
        body = req.params | body
    elif req.params_protocol == "anthropic":
        schema = output_schema(req.params)
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema},
            }
    return body


# -- outbound: what such a provider answers -----------------------------------------------
def result_of(data: Any, model_name: str, provider: str) -> ChatResult:
    """A ``chat.completion`` object → the neutral result."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        usage = data.get("usage") or {}
        calls = [
            ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "{}")
            for c in message.get("tool_calls") or ()
        ]
        return ChatResult(
            content=message.get("content") or "",
            finish_reason=finish_reason(choice.get("finish_reason")),
            usage=Usage(
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            ),
            upstream_model=str(data.get("model") or model_name),
            tool_calls=calls,
            upstream_id=data.get("id"),
            logprobs=choice.get("logprobs"),
        )
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UpstreamProtocolError(
            f"unexpected chat.completion shape: missing {exc}", provider=provider
        ) from None


_NOTHING: list[StreamEvent] = []


class ChunkDecoder:
    """A provider's SSE lines → neutral events; ``done`` once ``[DONE]`` was read."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.done = False

    def feed(self, line: bytes) -> list[StreamEvent]:
        if not line.startswith(b"data:"):
            return _NOTHING  # comments (": keep-alive") and other SSE fields
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return [Finish(self.reason or "stop", self.usage)]
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                "a stream event is not JSON", provider=self.provider
            ) from None
        if "error" in chunk:
            err = chunk["error"]
            msg = err.get("message", "") if isinstance(err, dict) else str(err)
            raise UpstreamStatusError(
                f"error in stream: {str(msg)[:300]}", provider=self.provider, upstream_status=500
            )
        u = chunk.get("usage")
        if u:
            self.usage = Usage(
                int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
            )
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                events.append(TextDelta(text, choice.get("logprobs")))
            for tc in delta.get("tool_calls") or ():
                fn = tc.get("function") or {}
                events.append(
                    ToolCallDelta(
                        index=int(tc.get("index") or 0),
                        id=tc.get("id"),
                        name=fn.get("name"),
                        arguments=fn.get("arguments") or "",
                    )
                )
            if choice.get("finish_reason"):
                self.reason = finish_reason(choice["finish_reason"])
        return events

    def incomplete(self) -> UpstreamProtocolError:
        return UpstreamProtocolError("the stream ended before [DONE]", provider=self.provider)


#: What only the stream's last events (or an error) hold, written compactly or with
#: spaces; a block without any of them is content, relayed unread. Inside a JSON string
#: a quote is escaped, so text cannot look like these.
_TAIL_MARKS = (
    b'"finish_reason":"',
    b'"finish_reason": "',
    b'"usage":{',
    b'"usage": {',
    b"[DONE]",
    b'"error"',
)


def _usage_only(event: bytes) -> bool:
    """The usage event ``stream_options.include_usage`` asks for: no choices."""
    return (b'"choices":[]' in event or b'"choices": []' in event) and (
        b'"usage":{' in event or b'"usage": {' in event
    )


def _delta_text(event: Any) -> str:
    choices = event.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


def relay(provider: str) -> EventRelay:
    """A provider's SSE bytes → ``Relayed`` blocks as sent, for an OpenAI-protocol
    client; the events that end a stream or report an error go through ``ChunkDecoder``."""
    return EventRelay(ChunkDecoder(provider), _TAIL_MARKS, _usage_only, _delta_text)


def stream_ids(data: bytes) -> tuple[str, str] | None:
    """The id and model of the first event in ``data`` that names both. Lines are
    found one at a time: the first one, of a block holding a whole stream, names them."""
    mark = b"\ndata: {"
    start = 0 if data.startswith(mark[1:]) else data.find(mark) + 1 or -1
    while start >= 0:
        end = data.find(b"\n", start)
        try:
            chunk = orjson.loads(data[start + 6 : end if end >= 0 else len(data)])
        except orjson.JSONDecodeError:
            chunk = None
        if isinstance(chunk, dict) and chunk.get("id") and chunk.get("model"):
            return str(chunk["id"]), str(chunk["model"])
        if end < 0:
            return None
        start = data.find(mark, end) + 1 or -1
    return None


def error_of(body: bytes) -> tuple[str | None, str | None]:
    """The error type and message of an error body in OpenAI's shape (``{"error":
    {"message", "type", "code"}}``) or vLLM's (``{"object": "error", "message"}``); no
    message when it is in neither: a server that is not this protocol's says nothing a
    client may read."""
    data = error_json(body)
    if isinstance(data, str):
        return None, None
    err = data.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        code = err.get("code")
        kind = code if isinstance(code, str) and code else err.get("type")
        return (str(kind) if kind else None), err["message"]
    if data.get("object") == "error" and isinstance(data.get("message"), str):
        kind = data.get("type")
        return (str(kind) if kind else None), data["message"]
    return None, None


def model_ids(data: Any, provider: str) -> list[str]:
    """``GET /models`` → the model ids."""
    try:
        return sorted(str(m["id"]) for m in data["data"])
    except (KeyError, TypeError):
        raise UpstreamProtocolError("unexpected model list shape", provider=provider) from None
