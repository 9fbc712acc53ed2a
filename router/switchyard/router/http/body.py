"""Read and validate request bodies: size limit, JSON, nesting depth, then a pydantic model.

The limits here are the ones every later stage can honour: a body that passes them can
be validated, hashed for the cache, encoded for any provider and stored.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from switchyard.router.errors import BadRequest, ClientDisconnected, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)

#: How deeply JSON objects and arrays may nest in a request. Deep enough for any real
#: tool schema (pydantic's nested models reach 20); far below what encoding a provider
#: request allows (orjson stops at 255) and what the parser accepts (1,024).
MAX_DEPTH = 64

_CONTAINERS = (dict, list)


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if declared > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    # The ASGI messages themselves, not Starlette's ``stream()``: an async generator
    # per request costs the event loop's bookkeeping of it (a weak set, a finalizer).
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected(f"the client left after {size} bytes of its body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not raw:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None
    # A body with no more brackets than the limit cannot nest deeper: two counts in C
    # spare most requests the walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _deeper_than(data, MAX_DEPTH):
        where = _json_path(_deep_path(data, MAX_DEPTH)[:6])
        raise BadRequest(
            f"{where}: JSON nests more than {MAX_DEPTH} levels deep", field=where or None
        )
    return data


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels; level by level, no recursion."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for v in level:
            for child in v.values() if type(v) is dict else v:
                if isinstance(child, _CONTAINERS):
                    below.append(child)
        level = below
    return False


def _deep_path(value: Any, limit: int) -> tuple[int | str, ...]:
    """The path to a container more than ``limit`` levels deep (only asked when one is)."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(value, ())]
    while stack:
        v, path = stack.pop()
        if len(path) >= limit:
            return path
        items = v.items() if type(v) is dict else enumerate(v)
        stack.extend((c, (*path, k)) for k, c in items if isinstance(c, _CONTAINERS))
    return ()


def _json_path(parts: tuple[int | str, ...]) -> str:
    return "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" if i else p for i, p in enumerate(parts)
    )


def _field(loc: tuple[int | str, ...], data: Any) -> str:
    """The path of a pydantic error in the client's terms.

    pydantic's locations also hold the names of union branches and discriminator
    tags; walking the data alongside keeps only what the client sent, plus the last
    part (a missing field's name).
    """
    out = ""
    node = data
    for i, part in enumerate(loc):
        if isinstance(part, int):
            if isinstance(node, list) and 0 <= part < len(node):
                out += f"[{part}]"
                node = node[part]
            continue
        if isinstance(node, dict) and part in node:
            below = [p for p in loc[i + 1 :] if not (isinstance(p, str) and _branch(p))]
            if below and not isinstance(node[part], dict | list):
                # A tagged union's tag ("text") that is also a field's name: the path
                # goes on inside the object, not into that field.
                continue
            node = node[part]
        elif i < len(loc) - 1 or not isinstance(node, dict) or _branch(part):
            continue
        out += f".{part}" if out else part
    return out


_TYPES = {"str", "int", "float", "bool", "dict", "list", "none"}


def _branch(part: str) -> bool:
    """A union branch or validator in an error location: ``str``, ``list[str]``, ``Tool``."""
    return part in _TYPES or "[" in part or part[:1].isupper() or part.startswith("function-")


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # For a union, pydantic reports every branch; the deepest error is the one
        # that matches what the client sent.
        err = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
        name = _field(err["loc"], data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # A discriminated union (a message's role, a block's type): name its tag field.
            tag = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
            name = f"{name}.{tag}" if name else tag
            if err["type"] == "union_tag_not_found":
                msg = "is required"
            else:
                msg = f"must be one of {err['ctx']['expected_tags']}; got {err['ctx']['tag']!r}"
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "extra_forbidden":
            msg = "is not a known field"
        raise BadRequest(f"{name}: {msg}" if name else msg, field=name or None) from None
