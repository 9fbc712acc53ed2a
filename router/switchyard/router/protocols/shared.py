"""What more than one protocol shares: tool shapes, and error bodies that should be JSON."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BeforeValidator

from switchyard.router.core.chat import Tool


def _integral(value: Any) -> Any:
    return int(value) if type(value) is float and value.is_integer() else value


#: Integers as JSON Schema counts them (``61.0`` is one), for request models that are
#: otherwise strict: a string or a fraction is still refused. It goes after the field's
#: bounds, ``Annotated[int, Field(ge=1), Integral]``, so the schema keeps them.
Integral = BeforeValidator(_integral)


def function_tools(tools: list[Tool], *, strict: bool = False) -> list[dict[str, Any]]:
    """Tools in OpenAI's shape, which Ollama shares; ``strict`` carries each tool's own
    (OpenAI's protocol has it, Ollama's does not)."""
    out = []
    for t in tools:
        fn: dict[str, Any] = {
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
        }
        if strict and t.strict is not None:
            fn["strict"] = t.strict
        out.append({"type": "function", "function": fn})
    return out


def arguments_object(text: str) -> Any:
    """Tool-call arguments (JSON text) as the object protocols that carry objects want.

    Arguments a model produced are usually, not always, a JSON object; anything else
    is wrapped rather than lost.
    """
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_value": value}


def arguments_or_empty(text: str) -> Any:
    """Tool-call arguments for a client that expects an object: ``{}`` if not JSON."""
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}


def error_json(body: bytes) -> dict[str, Any] | str:
    """An error body as the JSON object it should be, else as text to quote."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip() or "(empty body)"
    if not isinstance(data, dict):
        return body[:300].decode("utf-8", "replace")
    return data


def output_schema(params: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of Anthropic's ``output_config.format``, when there is one."""
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else None
    return None
