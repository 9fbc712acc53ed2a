"""Fake vLLM OpenAI-compatible server (``vllm serve``).

Differences from OpenAI, per vLLM's ``entrypoints/openai`` sources:
errors are ``{"error": {"message", "type", "param", "code": <int>}}`` with
types such as ``BadRequestError``/``NotFoundError``; ``--api-key`` auth
failures are ``{"error": "Unauthorized"}``; model cards carry
``owned_by: "vllm"``, ``root``, ``parent``, ``max_model_len``,
``permission``; a missing ``model`` falls back to the served model; streams
end with ``data: [DONE]`` even after an in-stream error.
``legacy_errors=True`` gives the flat pre-0.11 body
``{"object": "error", "message", "type", "param", "code"}``.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any, ClassVar

from aiohttp import web

from .content import Plan, new_id
from .openai import FakeOpenAI, _seconds
from .server import sse

_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    501: "NotImplementedError",
}


class FakeVLLM(FakeOpenAI):
    default_models: ClassVar[tuple[str, ...]] = ("meta-llama/Llama-3.1-8B-Instruct",)
    system_fingerprint: ClassVar[str | None] = None
    max_model_len: ClassVar[int] = 8192
    version: ClassVar[str] = "0.11.0"

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        models: list[str] | None = None,
        reply: str | None = None,
        chunk_delay: float = 0.0,
        legacy_errors: bool = False,
    ) -> None:
        super().__init__(api_key=api_key, models=models, reply=reply, chunk_delay=chunk_delay)
        self.legacy_errors = legacy_errors

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.get_version)

    def response_headers(
        self, request: web.Request, response: web.StreamResponse
    ) -> dict[str, str]:
        rid = request.headers.get("X-Request-Id")
        return {"x-request-id": rid} if rid else {}

    def vllm_error(
        self, status: int, message: str, *, type_: str | None = None, param: str | None = None
    ) -> dict[str, Any]:
        err_type = type_ or _TYPES.get(status) or HTTPStatus(status).phrase.replace(" ", "")
        info = {"message": message, "type": err_type, "param": param, "code": status}
        return {"object": "error", **info} if self.legacy_errors else {"error": info}

    def fault_error(
        self, request: web.Request, status: int, message: str | None, retry_after: float | None
    ) -> web.Response:
        headers = {"retry-after": _seconds(retry_after)} if retry_after is not None else {}
        default = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        return self.error(status, self.vllm_error(status, message or default), headers)

    def check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return None

    def validate(self, request: web.Request, body: Any) -> web.Response | None:
        if self.bad_json(request) or not isinstance(body, dict):
            return self.error(400, self.vllm_error(400, "JSON decode error"))
        if "messages" not in body:
            detail = (
                "[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required', "
                f"'input': {body!r}}}]"
            )
            return self.error(400, self.vllm_error(400, detail))
        model = body.get("model")
        if model is not None and model not in self.models:
            return self.model_not_found(str(model))
        return None

    def model_not_found(self, model: str) -> web.Response:
        return self.error(
            404, self.vllm_error(404, f"The model `{model}` does not exist.", param="model")
        )

    def model_name(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(body.get("model") or self.models[0])

    def plan(self, body: dict[str, Any]) -> Plan:
        if not body.get("model"):
            body = {**body, "model": self.models[0]}
        return super().plan(body)

    def usage(self, plan: Plan) -> dict[str, Any]:
        return {
            "prompt_tokens": plan.prompt_tokens,
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
            "completion_tokens": plan.completion_tokens,
            "prompt_tokens_details": None,
        }

    def message(self, plan: Plan) -> dict[str, Any]:
        msg = super().message(plan)
        msg.pop("annotations", None)
        msg.setdefault("tool_calls", [])
        msg["reasoning_content"] = None
        return msg

    def completion(
        self, cid: str, model: str, plan: Plan, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        out = super().completion(cid, model, plan, body)
        out["service_tier"] = None
        out["prompt_logprobs"] = None
        out["kv_transfer_params"] = None
        return out

    def decorate_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {**choice, "stop_reason": None}

    def chunk(
        self,
        cid: str,
        created: int,
        model: str,
        delta: dict[str, Any],
        finish: str | None,
        with_usage: bool,
        logprobs: Any = None,
    ) -> dict[str, Any]:
        out = super().chunk(cid, created, model, delta, finish, with_usage, logprobs)
        out.pop("service_tier", None)
        out.pop("system_fingerprint", None)
        return out

    def stream_error_frames(self, message: str | None) -> list[bytes]:
        info = {
            "message": message or "Internal server error",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
        return [sse({"error": info}), sse("[DONE]")]

    def model_card(self, model: str) -> dict[str, Any]:
        return {
            "id": model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": model,
            "parent": None,
            "max_model_len": self.max_model_len,
            "permission": [
                {
                    "id": new_id("modelperm-", 32),
                    "object": "model_permission",
                    "created": int(time.time()),
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def get_version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": self.version})
