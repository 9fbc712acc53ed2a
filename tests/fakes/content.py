"""Deterministic reply planning shared by every fake provider.

Rules (the router's tests may rely on them):

* reply text: the server's ``reply`` if set, else ``"Echo: " + <text of the
  last user turn>``;
* streaming chunks: one per word, each word keeping its leading whitespace;
* prompt tokens: words in every message (system prompt included) + 4 per
  message; completion tokens: number of chunks;
* ``max_tokens`` truncates the reply to that many words (length stop reason);
* a stop sequence found in the reply truncates it before the sequence;
* a tool call is made when tools are offered and either the tool choice forces
  one, or the last turn is a user turn containing the word "weather".
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

TOKENS_PER_MESSAGE = 4
_CHUNK_RE = re.compile(r"\s*\S+")
_WEATHER_RE = re.compile(r"\bweather\b", re.IGNORECASE)
_PLACE_RE = re.compile(r"\b(?:in|for|at)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)")

Finish = Literal["stop", "length", "stop_sequence", "tool_use"]


def text_of(content: Any) -> str:
    """Plain text of a message content in any of the providers' shapes."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        if isinstance(content.get("text"), str):
            return str(content["text"])
        if "content" in content:
            return text_of(content["content"])
        return ""
    if isinstance(content, list):
        return " ".join(t for t in (text_of(part) for part in content) if t)
    return ""


def count_words(text: str) -> int:
    return len(text.split())


def prompt_tokens(messages: Iterable[Any], system: Any = None) -> int:
    total = 0
    if system:
        total += count_words(text_of(system)) + TOKENS_PER_MESSAGE
    for message in messages:
        if isinstance(message, Mapping):
            total += count_words(text_of(message.get("content"))) + TOKENS_PER_MESSAGE
    return total


def split_chunks(text: str) -> list[str]:
    return _CHUNK_RE.findall(text)


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:length]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    schema: Mapping[str, Any]
    description: str = ""


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))

    def argument_chunks(self, size: int = 8) -> list[str]:
        raw = self.arguments_json
        return [raw[i : i + size] for i in range(0, len(raw), size)]


@dataclass(frozen=True)
class Plan:
    chunks: tuple[str, ...]
    finish: Finish
    prompt_tokens: int
    stop_sequence: str | None = None
    tool_call: ToolCall | None = None
    tool_chunks: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def completion_tokens(self) -> int:
        return len(self.tool_chunks) if self.tool_call else len(self.chunks)

    @property
    def stream_pieces(self) -> tuple[str, ...]:
        """What each content frame carries: words, or tool-argument fragments."""
        return self.tool_chunks if self.tool_call else self.chunks


def _fake_value(prop: str, schema: Mapping[str, Any], prompt: str) -> Any:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "string":
        match = _PLACE_RE.search(prompt)
        return match.group(1) if match else "Paris"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return None


def _instance(schema: Mapping[str, Any], prompt: str, depth: int = 0) -> Any:
    """A value the schema accepts: every required property (all when none are listed)."""
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required")
        names = required if isinstance(required, list) else list(props)
        if depth > 8:
            return {}
        return {n: _instance(props.get(n) or {}, prompt, depth + 1) for n in names}
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict) and depth <= 8:
        return [_instance(schema["items"], prompt, depth + 1)]
    return _fake_value("", schema, prompt)


def structured_reply(schema: Mapping[str, Any] | None, prompt: str) -> str:
    """What a model constrained to a JSON schema answers (JSON mode: ``schema`` None)."""
    if schema is None:
        return json.dumps({"answer": f"Echo: {prompt}"})
    return json.dumps(_instance(schema, prompt))


def make_tool_call(tool: ToolSpec, prompt: str, id_prefix: str) -> ToolCall:
    props = tool.schema.get("properties") or {}
    required = tool.schema.get("required")
    names: Sequence[str] = required if isinstance(required, list) else list(props)
    args = {
        name: _fake_value(name, props.get(name) or {}, prompt)
        for name in names
        if isinstance(name, str)
    }
    return ToolCall(id=new_id(id_prefix), name=tool.name, arguments=args)


def choose_tool(
    tools: Sequence[ToolSpec],
    choice: str | None,
    *,
    last_user_text: str | None,
) -> ToolSpec | None:
    """``choice``: None/"auto", "none", "any" (OpenAI "required"), or a tool name."""
    if not tools or choice == "none":
        return None
    if choice not in (None, "auto", "any"):
        return next((t for t in tools if t.name == choice), None)
    if choice == "any" or (last_user_text is not None and _WEATHER_RE.search(last_user_text)):
        weather = [t for t in tools if "weather" in (t.name + " " + t.description).lower()]
        return (weather or list(tools))[0]
    return None


def build_plan(
    *,
    reply: str | None,
    last_user_text: str,
    prompt_tokens: int,
    max_tokens: int | None,
    stop: Sequence[str] = (),
    tool: ToolSpec | None = None,
    tool_id_prefix: str = "call_",
) -> Plan:
    if tool is not None:
        call = make_tool_call(tool, last_user_text, tool_id_prefix)
        return Plan(
            chunks=(),
            finish="tool_use",
            prompt_tokens=prompt_tokens,
            tool_call=call,
            tool_chunks=tuple(call.argument_chunks()),
        )
    text = reply if reply is not None else f"Echo: {last_user_text}"
    hit: str | None = None
    cut_at = len(text)
    for seq in stop:
        if seq:
            idx = text.find(seq)
            if 0 <= idx < cut_at:
                cut_at, hit = idx, seq
    chunks = split_chunks(text[:cut_at])
    finish: Finish = "stop_sequence" if hit is not None else "stop"
    if max_tokens is not None and len(chunks) > max_tokens:
        chunks = chunks[: max(max_tokens, 0)]
        finish, hit = "length", None
    return Plan(chunks=tuple(chunks), finish=finish, prompt_tokens=prompt_tokens, stop_sequence=hit)


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic unit vector for ``text``: the same text, the same vector."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [(seed[i % len(seed)] - 127.5) / 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
