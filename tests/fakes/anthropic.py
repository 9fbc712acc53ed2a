"""Fake Anthropic Messages API (``/v1/messages``, ``/v1/models``)."""

from __future__ import annotations

import secrets
import string
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web

from .content import (
    Plan,
    ToolSpec,
    build_plan,
    choose_tool,
    prompt_tokens,
    structured_reply,
    text_of,
)
from .faults import Fault
from .openai import _seconds
from .server import FakeServer, StreamScript, respond, sse

_STOP = {
    "stop": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool_use": "tool_use",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_DEFAULT_MESSAGES = {
    429: "Number of requests has exceeded your per-minute rate limit",
    500: "Internal server error",
    504: "Request timed out",
    529: "Overloaded",
}
_B62 = string.ascii_letters + string.digits


def _request_id() -> str:
    return "req_011C" + "".join(secrets.choice(_B62) for _ in range(20))


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def anthropic_error(type_: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "error": {"type": type_, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


class FakeAnthropic(FakeServer):
    default_models: ClassVar[tuple[str, ...]] = (
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
    )
    request_limit: ClassVar[int] = 4000
    token_limit: ClassVar[int] = 2_000_000

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model}", self.get_model)

    def response_headers(
        self, request: web.Request, response: web.StreamResponse
    ) -> dict[str, str]:
        used = self.completions
        limited = response.status == 429
        reset = _rfc3339(datetime.now(UTC) + timedelta(seconds=1))
        headers = {
            "request-id": _request_id(),
            "anthropic-organization-id": "00000000-0000-4000-8000-000000000000",
        }
        for kind, limit in (
            ("requests", self.request_limit),
            ("tokens", self.token_limit),
            ("input-tokens", self.token_limit),
            ("output-tokens", self.token_limit // 5),
        ):
            remaining = (
                0 if limited else max(limit - (used if kind == "requests" else 100 * used), 0)
            )
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset
        return headers

    # ------------------------------------------------------------- errors
    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        rid = _request_id()
        type_ = _ERROR_TYPES.get(status) or (
            "api_error" if status >= 500 else "invalid_request_error"
        )
        return web.json_response(
            anthropic_error(type_, message, rid),
            status=status,
            headers={"request-id": rid, **(headers or {})},
        )

    def fault_error(
        self, request: web.Request, status: int, message: str | None, retry_after: float | None
    ) -> web.Response:
        headers = {"retry-after": _seconds(retry_after)} if retry_after is not None else {}
        return self.error(status, message or _DEFAULT_MESSAGES.get(status, "Error"), headers)

    def check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None:
            key = request.headers.get("x-api-key")
            if key is None:
                # current SDKs send the API key as a bearer token
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                key = token.strip() if scheme.lower() == "bearer" and token.strip() else None
            if key is None:
                return self.error(401, "x-api-key header is required")
            if key != self.api_key:
                return self.error(401, "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return self.error(400, "anthropic-version: header is required")
        return None

    def validate(self, request: web.Request, body: Any) -> web.Response | None:
        if self.bad_json(request) or not isinstance(body, dict):
            return self.error(400, "There was an issue with your request body: invalid JSON")
        for field in ("model", "messages", "max_tokens"):
            if field not in body:
                return self.error(400, f"{field}: Field required")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return self.error(400, "max_tokens: Input should be greater than or equal to 1")
        if not isinstance(body["messages"], list) or not body["messages"]:
            return self.error(400, "messages: at least one message is required")
        if body["model"] not in self.models:
            return self.error(404, f"model: {body['model']}")
        return None

    # ------------------------------------------------------------ answers
    def plan(self, body: dict[str, Any]) -> Plan:
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        last = messages[-1] if messages else {}
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        tools = [
            ToolSpec(
                name=str(t.get("name", "")),
                schema=t.get("input_schema") or {},
                description=str(t.get("description", "")),
            )
            for t in body.get("tools") or []
            if isinstance(t, dict) and "name" in t
        ]
        raw_choice = body.get("tool_choice")
        choice: str | None = None
        if isinstance(raw_choice, dict):
            kind = raw_choice.get("type")
            choice = str(raw_choice.get("name", "")) if kind == "tool" else str(kind)
        content = last.get("content")
        is_plain_user_turn = last.get("role") == "user" and not (
            isinstance(content, list)
            and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
        )
        tool = choose_tool(
            tools,
            choice,
            last_user_text=text_of(content) if is_plain_user_turn else None,
        )
        stops = [s for s in body.get("stop_sequences") or [] if isinstance(s, str)]
        reply = self.reply
        config = body.get("output_config")
        fmt = config.get("format") if isinstance(config, dict) else None
        if reply is None and isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
            reply = structured_reply(fmt["schema"], text_of(last_user.get("content")))
        return build_plan(
            reply=reply,
            last_user_text=text_of(last_user.get("content")),
            prompt_tokens=prompt_tokens(messages, body.get("system")),
            max_tokens=int(body["max_tokens"]),
            stop=stops,
            tool=tool,
            tool_id_prefix="toolu_01",
        )

    @staticmethod
    def usage(plan: Plan, *, output_tokens: int | None = None) -> dict[str, Any]:
        return {
            "input_tokens": plan.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": plan.completion_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
        }

    def blocks(self, plan: Plan) -> list[dict[str, Any]]:
        if plan.tool_call:
            return [
                {
                    "type": "tool_use",
                    "id": plan.tool_call.id,
                    "name": plan.tool_call.name,
                    "input": plan.tool_call.arguments,
                }
            ]
        return [{"type": "text", "text": plan.text}]

    def message(self, mid: str, model: str, plan: Plan) -> dict[str, Any]:
        return {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self.blocks(plan),
            "stop_reason": _STOP[plan.finish],
            "stop_sequence": plan.stop_sequence,
            "usage": self.usage(plan),
        }

    def script(self, mid: str, model: str, plan: Plan, fault: Fault | None) -> StreamScript:
        start = {
            "type": "message_start",
            "message": {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self.usage(plan, output_tokens=1),
            },
        }
        if plan.tool_call:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": plan.tool_call.id,
                "name": plan.tool_call.name,
                "input": {},
            }
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in plan.tool_chunks]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in plan.chunks]
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP[plan.finish], "stop_sequence": plan.stop_sequence},
            "usage": {"output_tokens": plan.completion_tokens},
        }
        error_message = (fault.message if fault else None) or "Overloaded"
        return StreamScript(
            head=[
                sse(start, "message_start"),
                sse(
                    {"type": "content_block_start", "index": 0, "content_block": block},
                    "content_block_start",
                ),
                sse({"type": "ping"}, "ping"),
            ],
            content=[
                sse({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta")
                for d in deltas
            ],
            tail=[
                sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                sse(message_delta, "message_delta"),
                sse({"type": "message_stop"}, "message_stop"),
            ],
            error=[sse(anthropic_error("overloaded_error", error_message, _request_id()), "error")],
            content_type="text/event-stream; charset=utf-8",
        )

    async def messages(self, request: web.Request) -> web.StreamResponse:
        fault, early = await self.admit(request)
        if early is not None:
            return early
        body = self.body(request)
        invalid = self.validate(request, body)
        if invalid is not None:
            return invalid
        plan = self.plan(body)
        model = str(body["model"])
        mid = "msg_01" + "".join(secrets.choice(_B62) for _ in range(22))
        return await respond(
            self,
            request,
            fault,
            stream=body.get("stream") is True,
            script=lambda: self.script(mid, model, plan, fault),
            payload=lambda: self.message(mid, model, plan),
        )

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        """``{"input_tokens": N}``; like Anthropic, without ``max_tokens`` in the body."""
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        body = self.body(request)
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return self.error(400, "model and messages: Field required")
        if "max_tokens" in body:
            return self.error(400, "max_tokens: Extra inputs are not permitted")
        if body["model"] not in self.models:
            return self.error(404, f"model: {body['model']}")
        return web.json_response(
            {"input_tokens": prompt_tokens(body["messages"], body.get("system"))}
        )

    # ------------------------------------------------------------- models
    @staticmethod
    def model_info(model: str) -> dict[str, Any]:
        display = model.replace("claude-", "Claude ").replace("-", " ").title()
        return {
            "type": "model",
            "id": model,
            "display_name": display,
            "created_at": _rfc3339(datetime.fromtimestamp(time.time() - 86400 * 30, UTC)),
        }

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        data = [self.model_info(m) for m in self.models]
        after = request.query.get("after_id")
        if after in self.models:
            data = data[self.models.index(after) + 1 :]
        limit = int(request.query.get("limit", "20"))
        page = data[:limit]
        return web.json_response(
            {
                "data": page,
                "has_more": len(data) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    async def get_model(self, request: web.Request) -> web.StreamResponse:
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if model not in self.models:
            return self.error(404, f"model: {model}")
        return web.json_response(self.model_info(model))
