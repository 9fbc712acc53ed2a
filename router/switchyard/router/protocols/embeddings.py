"""OpenAI's embeddings API, inbound (``POST /v1/embeddings``) and outbound to providers
of OpenAI's protocol (OpenAI, Azure, vLLM); Ollama's ``/api/embed`` is in ``ollama``.

To an OpenAI-protocol provider the body goes as sent (fields Switchyard does not model
included) and its answer comes back as sent, with the table's model name: relayed as it
arrives (``AnswerRelay``), as chat streams are, so that 2,048 vectors of 3,072 floats
(135 MB of JSON) pass through the router without being held.
"""

from __future__ import annotations

import base64
import re
import struct
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from switchyard.router.core.chat import Usage
from switchyard.router.core.embedding import EmbeddingRequest, EmbeddingResult
from switchyard.router.errors import UpstreamProtocolError
from switchyard.router.protocols.openai import AUTO_MODELS
from switchyard.router.protocols.shared import Integral

_Text = Annotated[str, Field(min_length=1)]
_Ids = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=100_000)]


class EmbeddingsBody(BaseModel):
    """Fields it does not name are kept (``model_extra``) and forwarded as sent."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=253)
    input: (
        _Text
        | Annotated[list[_Text], Field(min_length=1, max_length=2048)]
        | _Ids
        | Annotated[list[_Ids], Field(min_length=1, max_length=2048)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1, le=65_536), Integral] | None = None
    user: str | None = None


def to_request(body: EmbeddingsBody, task: str | None) -> EmbeddingRequest:
    params = dict(body.model_extra or {})
    if body.encoding_format is not None:
        params["encoding_format"] = body.encoding_format
    if body.dimensions is not None:
        params["dimensions"] = body.dimensions
    if body.user is not None:
        params["user"] = body.user
    return EmbeddingRequest(
        model=None if body.model in AUTO_MODELS else body.model,
        input=body.input,
        params=params,
        task_type=task,
    )


# -- to and from an OpenAI-protocol provider --------------------------------------------
def request_body(req: EmbeddingRequest, model_name: str) -> dict[str, Any]:
    return req.params | {"model": model_name, "input": req.input}


def result_of(data: Any, model_name: str, provider: str) -> EmbeddingResult:
    try:
        usage = data.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        if not isinstance(data["data"], list):
            raise TypeError("data is not a list")
        return EmbeddingResult(Usage(prompt, 0), str(data.get("model") or model_name), raw=data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UpstreamProtocolError(
            f"unexpected embeddings answer: {exc}", provider=provider
        ) from None


class AnswerRelay:
    """An OpenAI-protocol embeddings answer on its way to the client as it arrives, with
    its ``model`` renamed to the table's and its ``usage`` read.

    Only the head (up to ``"data"``) and the last ``TAIL`` bytes are held: the members
    around the vectors (``model``, ``usage``) are there, in whichever order a provider
    writes them, and no vector holds a ``"`` that could be mistaken for a key."""

    HEAD = 64 * 1024
    TAIL = 8 * 1024
    _MODEL = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')
    _USAGE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')

    def __init__(self, model: str) -> None:
        self.model = b'"model":' + orjson.dumps(model)
        self.usage: Usage | None = None
        self._held = bytearray()
        self._in_head = True

    def feed(self, chunk: bytes) -> bytes:
        """What may go to the client now."""
        held = self._held
        held += chunk
        if self._in_head:
            at = held.find(b'"data"')
            if at < 0 and len(held) < self.HEAD:
                return b""
            self._in_head = False
            head = bytes(held[: at if at >= 0 else len(held)])
            self._read_usage(head)
            out = self._MODEL.sub(self._model_of, head)
            del held[: len(head)]
            return out + self._release()
        return self._release()

    def _release(self) -> bytes:
        """All but the last ``TAIL`` bytes."""
        held = self._held
        if len(held) <= self.TAIL:
            return b""
        out = bytes(held[: -self.TAIL])
        del held[: -self.TAIL]
        return out

    def close(self) -> bytes:
        """The rest, once the provider's answer has ended."""
        tail = bytes(self._held)
        self._held.clear()
        self._read_usage(tail)
        return self._MODEL.sub(self._model_of, tail)

    def _model_of(self, _match: re.Match[bytes]) -> bytes:
        return self.model

    def _read_usage(self, part: bytes) -> None:
        found = self._USAGE.search(part)
        if found is None:
            return
        try:
            usage = orjson.loads(found.group(1))
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), 0)
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            return


# -- to the client ------------------------------------------------------------------------
def _packed(vector: list[float]) -> str:
    """``encoding_format: base64``: little-endian float32s, as OpenAI sends them."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def response_json(req: EmbeddingRequest, result: EmbeddingResult, model: str) -> dict[str, Any]:
    """The answer in OpenAI's shape, named with the table's ``model``."""
    if result.raw is not None:
        return result.raw | {"model": model}
    packed = req.params.get("encoding_format") == "base64"
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _packed(v) if packed else v}
            for i, v in enumerate(result.vectors)
        ],
        "model": model,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "total_tokens": result.usage.prompt_tokens,
        },
    }
