"""OpenAI's Responses API, inbound (``POST /v1/responses``): the default path of the
OpenAI Agents SDK and of the Vercel AI SDK's OpenAI provider.

No provider speaks it, so a request becomes the neutral one like any other surface's
(text and function-call items, instructions, function tools, ``text.format`` as the
chat protocol's ``response_format``) and the answer is written back as a ``response``
object or its streaming event sequence. Answers are kept (``store``) by
``core.kept_responses``; ``continue_from`` puts a kept conversation before a request's
own input (``previous_response_id``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic.config import JsonDict

from switchyard.router.core.chat import (
    ChatRequest,
    Finish,
    Message,
    StreamEvent,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from switchyard.router.errors import BadRequest
from switchyard.router.protocols.openai import AUTO_MODELS
from switchyard.router.protocols.shared import Integral
from switchyard.router.protocols.sse import named

if TYPE_CHECKING:
    from switchyard.router.core.accounting import Completed
    from switchyard.router.core.streaming import Streaming


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Loose):
    type: Literal["input_text", "output_text"]
    text: str


class MessageItem(_Loose):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextPart]


class FunctionCallItem(_Loose):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str = "{}"


class FunctionCallOutputItem(_Loose):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str


#: An input item; a message may leave out ``type``, as the SDKs' easy input does.
InputItem = FunctionCallItem | FunctionCallOutputItem | MessageItem


class FunctionTool(_Loose):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Loose):
    type: Literal["function"]
    name: str = Field(min_length=1)


#: ``to_chat_request``'s rules as JSON Schema, for the OpenAPI document.
_JSON_SCHEMA_NAMED: JsonDict = {
    "anyOf": [
        {"properties": {"type": {"enum": ["text", "json_object"]}}},
        {"required": ["name"], "properties": {"type": {"const": "json_schema"}}},
    ]
}
_SAYS_SOMETHING: JsonDict = {
    "anyOf": [
        {"required": ["role"], "properties": {"role": {"enum": ["user", "assistant"]}}},
        {
            "required": ["type"],
            "properties": {"type": {"enum": ["function_call", "function_call_output"]}},
        },
    ]
}


class TextFormat(_Loose):
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_JSON_SCHEMA_NAMED)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(_Loose):
    format: TextFormat | None = None


class Reasoning(_Loose):
    effort: Literal["minimal", "low", "medium", "high"] | None = None


class ResponsesBody(BaseModel):
    """What Switchyard serves of ``POST /v1/responses``; any other field is refused by
    name, since no provider would know what to do with it."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    model: str = Field(min_length=1, max_length=253)
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[
            list[InputItem],
            Field(min_length=1, max_length=10_000, json_schema_extra={"contains": _SAYS_SOMETHING}),
        ]
    )
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000), Integral] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=128)
    #: As OpenAI's: at most 16 pairs, keys of at most 64 characters, values of 512. A
    #: kept answer holds it, so what one request may make the router keep is bounded.
    metadata: (
        dict[
            Annotated[str, StringConstraints(max_length=64)],
            Annotated[str, StringConstraints(max_length=512)],
        ]
        | None
    ) = Field(default=None, max_length=16)
    user: str | None = None
    #: Shape and caching hints that change nothing generated here.
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None


_ITEMS: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


def items_of(body: ResponsesBody) -> list[InputItem]:
    """The request's input as items (text is one user message)."""
    if isinstance(body.input, str):
        return [MessageItem(role="user", content=body.input)]
    return body.input


def continue_from(body: ResponsesBody, earlier: list[dict[str, Any]]) -> None:
    """Put a kept conversation (its input and output items) before the request's own."""
    try:
        before = _ITEMS.validate_python(earlier)
    except ValidationError as exc:  # written by an older version, or by hand
        raise BadRequest(
            "previous_response_id: that response cannot be continued here",
            field="previous_response_id",
        ) from exc
    body.input = before + items_of(body)


def conversation_items(
    items: list[list[dict[str, Any]]], answers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A kept conversation as one list of items: each turn's own input, then the output
    of its answer (where ``answers`` has one: the last turn's is left out of a listing of
    what a model was given)."""
    out: list[dict[str, Any]] = []
    for i, own in enumerate(items):
        out += own
        if i < len(answers):
            out += answers[i].get("output", [])
    return out


_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def kept_items(items: list[InputItem]) -> list[dict[str, Any]]:
    """The items the model was given, as a kept answer holds them: each with an id, as
    ``GET /v1/responses/{id}/input_items`` lists them."""
    out: list[dict[str, Any]] = []
    for item in items:
        data = item.model_dump(exclude_none=True)
        data.setdefault("type", "message")
        data["id"] = new_id(_PREFIX[data["type"]])
        if isinstance(item, MessageItem):
            kind = "output_text" if item.role == "assistant" else "input_text"
            data["content"] = [{"type": kind, "text": _text(item.content)}]
            data["status"] = "completed"
        out.append(data)
    return out


def _text(content: str | list[TextPart]) -> str:
    return content if isinstance(content, str) else "".join(p.text for p in content)


def to_chat_request(body: ResponsesBody, task: str | None) -> ChatRequest:
    system = [body.instructions] if body.instructions else []
    messages: list[Message] = []
    for item in items_of(body):
        if isinstance(item, MessageItem):
            text = _text(item.content)
            if item.role == "user" or item.role == "assistant":
                messages.append(Message(item.role, text))
            else:
                system.append(text)
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(item.call_id, item.name, item.arguments)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                last.tool_calls.append(call)
            else:
                messages.append(Message("assistant", "", tool_calls=[call]))
        else:
            messages.append(Message("tool", item.output, tool_call_id=item.call_id))
    if not messages:
        raise BadRequest("input: at least one user message is required", field="input")
    choice: str | dict[str, Any] | None
    if isinstance(body.tool_choice, NamedFunction):
        choice = {"name": body.tool_choice.name}
    else:
        choice = body.tool_choice
    params: dict[str, Any] = {}
    fmt = body.text.format if body.text else None
    if fmt is not None and fmt.type == "json_object":
        params["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        if not fmt.name:
            raise BadRequest("text.format.name is required", field="text.format.name")
        spec: dict[str, Any] = {"name": fmt.name}
        if fmt.schema_ is not None:
            spec["schema"] = fmt.schema_
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        if fmt.description is not None:
            spec["description"] = fmt.description
        params["response_format"] = {"type": "json_schema", "json_schema": spec}
    if body.parallel_tool_calls is not None:
        params["parallel_tool_calls"] = body.parallel_tool_calls
    if body.reasoning is not None and body.reasoning.effort is not None:
        params["reasoning_effort"] = body.reasoning.effort
    return ChatRequest(
        messages=messages,
        system="\n\n".join(system) or None,
        model=None if body.model in AUTO_MODELS else body.model,
        task_type=task,
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stream=body.stream,
        tools=[
            Tool(
                t.name,
                t.description or "",
                t.parameters or {"type": "object", "properties": {}},
                t.strict,
            )
            for t in body.tools or ()
        ],
        tool_choice=choice,
        user=body.user,
        params=params,
        params_protocol="openai",
    )


def new_id(prefix: str) -> str:
    """Random ids, as tenants see them: ``resp_…``, ``msg_…``, ``fc_…``."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    }


def _envelope(
    body: ResponsesBody, response_id: str, created: int, model: str, store: bool
) -> dict[str, Any]:
    """A ``response`` object without its outcome (status, output, usage)."""
    fmt = body.text.format if body.text and body.text.format else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "model": model,
        "output": [],
        "parallel_tool_calls": True
        if body.parallel_tool_calls is None
        else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": body.reasoning.effort if body.reasoning else None, "summary": None},
        "service_tier": "default",
        "store": store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {
            "format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}
        },
        "tool_choice": (
            body.tool_choice.model_dump()
            if isinstance(body.tool_choice, NamedFunction)
            else body.tool_choice or "auto"
        ),
        "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled",
        "usage": None,
        "user": body.user,
    }


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if status == "completed"
        else [],
    }


def _call(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def _finish(obj: dict[str, Any], reason: str, usage: Usage) -> dict[str, Any]:
    if reason == "length":
        obj["status"] = "incomplete"
        obj["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        obj["status"] = "completed"
    obj["usage"] = _usage(usage)
    return obj


def response_json(
    body: ResponsesBody, done: Completed, response_id: str, store: bool
) -> dict[str, Any]:
    r = done.result
    obj = _envelope(body, response_id, int(time.time()), done.model, store)
    output: list[dict[str, Any]] = []
    if r.content or not r.tool_calls:
        output.append(_message(new_id("msg"), r.content, "completed"))
    output += [_call(new_id("fc"), c, "completed") for c in r.tool_calls]
    obj["output"] = output
    return _finish(obj, r.finish_reason, r.usage)


class EventEncoder:
    """Neutral events → the Responses streaming sequence: ``response.created``, items
    added, ``response.output_text.delta`` / ``function_call_arguments.delta``, items
    done, ``response.completed``. Every event carries a ``sequence_number``."""

    def __init__(
        self,
        body: ResponsesBody,
        streaming: Streaming,
        response_id: str,
        headers: dict[str, str],
        store: bool,
    ) -> None:
        self.streaming = streaming
        self.headers = headers
        self.obj = _envelope(body, response_id, int(time.time()), streaming.model, store)
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.text: list[str] | None = None  # the open message's text
        self.call: ToolCall | None = None  # the open function call
        self.call_index = -1
        self.item_id = ""
        self.reason = "stop"

    def _emit(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return named(kind.encode(), data)

    def open(self) -> bytes:
        return self._emit("response.created", {"response": self.obj}) + self._emit(
            "response.in_progress", {"response": self.obj}
        )

    def _close_item(self) -> bytes:
        index = len(self.output)
        if self.text is not None:
            text = "".join(self.text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item = _message(self.item_id, text, "completed")
            self.text = None
            self.output.append(item)
            where = {"item_id": self.item_id, "output_index": index}
            return (
                self._emit(
                    "response.output_text.done",
                    {**where, "content_index": 0, "text": text, "logprobs": []},
                )
                + self._emit(
                    "response.content_part.done", {**where, "content_index": 0, "part": part}
                )
                + self._emit("response.output_item.done", {"output_index": index, "item": item})
            )
        if self.call is not None:
            item = _call(self.item_id, self.call, "completed")
            self.call = None
            self.output.append(item)
            return self._emit(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": index, "arguments": item["arguments"]},
            ) + self._emit("response.output_item.done", {"output_index": index, "item": item})
        return b""

    def event(self, event: StreamEvent) -> bytes:
        index = len(self.output)
        if type(event) is TextDelta:
            out = b""
            if self.text is None:
                out = self._close_item()
                index = len(self.output)
                self.item_id = new_id("msg")
                self.text = []
                out += self._emit(
                    "response.output_item.added",
                    {"output_index": index, "item": _message(self.item_id, "", "in_progress")},
                ) + self._emit(
                    "response.content_part.added",
                    {
                        "item_id": self.item_id,
                        "output_index": index,
                        "content_index": 0,
                        "part": {
                            "type": "output_text",
                            "text": "",
                            "annotations": [],
                            "logprobs": [],
                        },
                    },
                )
            self.text.append(event.text)
            return out + self._emit(
                "response.output_text.delta",
                {
                    "item_id": self.item_id,
                    "output_index": index,
                    "content_index": 0,
                    "delta": event.text,
                    "logprobs": [],
                },
            )
        if isinstance(event, ToolCallDelta):
            out = b""
            if self.call is None or event.index != self.call_index:
                out = self._close_item()
                index = len(self.output)
                self.item_id = new_id("fc")
                self.call_index = event.index
                self.call = ToolCall(event.id or new_id("call"), event.name or "", "")
                out += self._emit(
                    "response.output_item.added",
                    {"output_index": index, "item": _call(self.item_id, self.call, "in_progress")},
                )
            if event.arguments:
                self.call.arguments += event.arguments
                out += self._emit(
                    "response.function_call_arguments.delta",
                    {"item_id": self.item_id, "output_index": index, "delta": event.arguments},
                )
            return out
        if isinstance(event, Finish):
            self.reason = event.reason
        return b""

    def error(self, body: dict[str, Any]) -> bytes:
        err = body.get("error", {})
        return self._emit(
            "error",
            {"code": err.get("code"), "message": err.get("message", ""), "param": err.get("param")},
        )

    def close(self) -> bytes:
        out = self._close_item()
        self.obj["output"] = self.output
        return out + self._emit(
            "response.completed", {"response": _finish(self.obj, self.reason, self.streaming.usage)}
        )


@dataclass(frozen=True, slots=True)
class ItemQuery:
    """A listing's parameters, checked before anything is read."""

    ascending: bool
    limit: int
    after: str | None


def item_query(query: dict[str, str]) -> ItemQuery:
    unknown = sorted(set(query) - {"order", "limit", "after", "include"})
    if unknown:
        raise BadRequest(f"unknown query parameter: {unknown[0]}", field=unknown[0])
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("order: 'asc' or 'desc'", field="order")
    raw = query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequest("limit: a whole number from 1 to 100", field="limit")
    return ItemQuery(order == "asc", int(raw), query.get("after"))


def item_page(items: list[dict[str, Any]], query: ItemQuery) -> dict[str, Any]:
    """One page of a kept answer's input items, in OpenAI's list shape."""
    ordered = items if query.ascending else items[::-1]
    if query.after is not None:
        at = next((i for i, item in enumerate(ordered) if item.get("id") == query.after), None)
        if at is None:
            raise BadRequest(f"after: no item {query.after[:80]!r} in this response", field="after")
        ordered = ordered[at + 1 :]
    page = ordered[: query.limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > len(page),
    }
