"""Read and validate request bodies: size limit, JSON, then a pydantic model."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from switchyard.router.errors import BadRequest, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if declared > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (part.startswith("function-") or part in ("str", "list[str]", "list", "dict")):
            out += f".{part}" if out else part
    return out


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # For a union, pydantic reports every branch; the deepest error is the one
        # that matches what the client sent.
        err = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
        name = _field(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required"
        elif err["type"] == "extra_forbidden":
            msg = "is not a known field"
        raise BadRequest(f"{name}: {msg}" if name else msg, field=name or None) from None
