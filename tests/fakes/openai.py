"""Fake OpenAI Chat Completions API (``/v1/chat/completions``, ``/v1/models``)."""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web

from .content import (
    Plan,
    ToolSpec,
    build_plan,
    choose_tool,
    fake_vector,
    new_id,
    prompt_tokens,
    structured_reply,
    text_of,
)
from .faults import Fault
from .server import FakeServer, StreamScript, respond, sse


def _logprobs(pieces: list[str] | tuple[str, ...], body: dict[str, Any] | None) -> Any:
    """OpenAI's ``choices[].logprobs`` for ``pieces``, when the request asked for them."""
    if not body or body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs") or 0
    content = []
    for i, piece in enumerate(pieces):
        entry = {"token": piece, "logprob": -0.25 * (i % 4), "bytes": list(piece.encode())}
        entry["top_logprobs"] = [
            {"token": piece if k == 0 else f"alt{k}", "logprob": -0.25 * k, "bytes": None}
            for k in range(top)
        ]
        content.append(entry)
    return {"content": content, "refusal": None}


_FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool_use": "tool_calls"}


def openai_error(
    message: str, type_: str, *, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class FakeOpenAI(FakeServer):
    """OpenAI: Bearer auth, x-ratelimit-* headers, ``chat.completion(.chunk)``."""

    default_models: ClassVar[tuple[str, ...]] = ("gpt-4o-mini", "gpt-4o")
    url_suffix: ClassVar[str] = "/v1"
    request_limit: ClassVar[int] = 10_000
    token_limit: ClassVar[int] = 30_000_000
    system_fingerprint: ClassVar[str | None] = "fp_5d58a6052a"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model}", self.get_model)

    # ------------------------------------------------------------ headers
    def response_headers(
        self, request: web.Request, response: web.StreamResponse
    ) -> dict[str, str]:
        used = self.completions
        limited = response.status == 429
        return {
            "x-request-id": new_id("req_", 32),
            "openai-version": "2020-10-01",
            "openai-organization": "switchyard-tests",
            "openai-processing-ms": str(self.elapsed_ms(request)),
            "x-ratelimit-limit-requests": str(self.request_limit),
            "x-ratelimit-limit-tokens": str(self.token_limit),
            "x-ratelimit-remaining-requests": "0"
            if limited
            else str(max(self.request_limit - used, 0)),
            "x-ratelimit-remaining-tokens": "0" if limited else str(self.token_limit - 100 * used),
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "0s",
        }

    # ------------------------------------------------------------- errors
    def error(
        self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.json_response(body, status=status, headers=dict(headers or {}))

    def fault_error(
        self, request: web.Request, status: int, message: str | None, retry_after: float | None
    ) -> web.Response:
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = _seconds(retry_after)
            headers["retry-after-ms"] = str(int(retry_after * 1000))
        if status == 429:
            sent = self.body(request)
            model = sent.get("model", "gpt-4o-mini") if isinstance(sent, dict) else "gpt-4o-mini"
            wait = f"{retry_after:g}s" if retry_after is not None else "1s"
            headers["x-ratelimit-reset-requests"] = wait
            body = openai_error(
                message
                or (
                    f"Rate limit reached for {model} in organization org-switchyard on requests "
                    f"per min (RPM): Limit {self.request_limit}, Used {self.request_limit}, "
                    f"Requested 1. Please try again in {wait}. Visit "
                    "https://platform.openai.com/account/rate-limits to learn more."
                ),
                "requests",
                param=None,
                code="rate_limit_exceeded",
            )
        elif status == 401:
            body = openai_error(
                message or "Incorrect API key provided.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        elif status == 404:
            body = openai_error(message or "Not found.", "invalid_request_error")
        elif status == 502:
            body = openai_error(message or "Bad gateway.", "cf_bad_gateway", code=502)
        elif status == 503:
            body = openai_error(
                message or "The engine is currently overloaded, please try again later.",
                "server_error",
            )
        elif status >= 500:
            body = openai_error(
                message
                or "The server had an error while processing your request. Sorry about that!",
                "server_error",
            )
        else:
            body = openai_error(message or "Invalid request.", "invalid_request_error")
        return self.error(status, body, headers)

    def check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        auth = request.headers.get("Authorization", "")
        if not auth:
            return self.error(
                401,
                openai_error(
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                    "or as the password field (with blank username) if you're accessing the API "
                    "from your browser and are prompted for a username and password. You can "
                    "obtain an API key from https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                ),
            )
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            shown = key.strip()
            masked = f"{shown[:3]}*****{shown[-4:]}" if len(shown) > 8 else "*****"
            return self.error(
                401,
                openai_error(
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    code="invalid_api_key",
                ),
            )
        return None

    def bad_request(
        self, message: str, *, param: str | None = None, code: str | None = None
    ) -> web.Response:
        return self.error(
            400, openai_error(message, "invalid_request_error", param=param, code=code)
        )

    def model_not_found(self, model: str) -> web.Response:
        return self.error(
            404,
            openai_error(
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                code="model_not_found",
            ),
        )

    def check_messages(self, body: dict[str, Any]) -> web.Response | None:
        """OpenAI's answers to a missing or empty ``messages`` (Azure gives the same)."""
        if "messages" not in body:
            return self.bad_request(
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(body["messages"], list) or not body["messages"]:
            return self.bad_request(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        return None

    def validate(self, request: web.Request, body: Any) -> web.Response | None:
        if self.bad_json(request) or not isinstance(body, dict):
            return self.bad_request(
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON. If you have trouble figuring out how to fix "
                "this, please contact us through our help center at help.openai.com.)"
            )
        if not body.get("model"):
            return self.bad_request("you must provide a model parameter")
        if (bad := self.check_messages(body)) is not None:
            return bad
        if body["model"] not in self.models:
            return self.model_not_found(str(body["model"]))
        return None

    # ------------------------------------------------------------ answers
    def model_name(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(body["model"])

    def plan(self, body: dict[str, Any]) -> Plan:
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        last = messages[-1] if messages else {}
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        tools = [
            ToolSpec(
                name=str(t["function"].get("name", "")),
                schema=t["function"].get("parameters") or {},
                description=str(t["function"].get("description", "")),
            )
            for t in body.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        choice_raw = body.get("tool_choice")
        choice: str | None
        if isinstance(choice_raw, dict):
            choice = str((choice_raw.get("function") or {}).get("name", ""))
        elif choice_raw == "required":
            choice = "any"
        else:
            choice = choice_raw if isinstance(choice_raw, str) else None
        tool = choose_tool(
            tools,
            choice,
            last_user_text=text_of(last.get("content")) if last.get("role") == "user" else None,
        )
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        reply = self.reply
        fmt = body.get("response_format")
        if reply is None and isinstance(fmt, dict) and fmt.get("type") != "text":
            spec = fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
            schema = spec.get("schema") if isinstance(spec, dict) else None
            reply = structured_reply(
                schema if isinstance(schema, dict) else None, text_of(last_user.get("content"))
            )
        return build_plan(
            reply=reply,
            last_user_text=text_of(last_user.get("content")),
            prompt_tokens=prompt_tokens(messages),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            stop=stops,
            tool=tool,
        )

    def usage(self, plan: Plan) -> dict[str, Any]:
        return {
            "prompt_tokens": plan.prompt_tokens,
            "completion_tokens": plan.completion_tokens,
            "total_tokens": plan.prompt_tokens + plan.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def message(self, plan: Plan) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": None if plan.tool_call else plan.text,
            "refusal": None,
            "annotations": [],
        }
        if plan.tool_call:
            msg["tool_calls"] = [
                {
                    "id": plan.tool_call.id,
                    "type": "function",
                    "function": {
                        "name": plan.tool_call.name,
                        "arguments": plan.tool_call.arguments_json,
                    },
                }
            ]
        return msg

    def completion(
        self, cid: str, model: str, plan: Plan, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                self.decorate_choice(
                    {
                        "index": 0,
                        "message": self.message(plan),
                        "logprobs": _logprobs(plan.chunks, body) if not plan.tool_call else None,
                        "finish_reason": _FINISH[plan.finish],
                    }
                )
            ],
            "usage": self.usage(plan),
            "service_tier": "default",
            "system_fingerprint": self.system_fingerprint,
        }

    def decorate_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        return choice

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
        out: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": self.system_fingerprint,
            "choices": [
                self.decorate_chunk_choice(
                    {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
                )
            ],
        }
        if with_usage:
            out["usage"] = None
        return out

    def decorate_chunk_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        return choice

    def stream_error_frames(self, message: str | None) -> list[bytes]:
        return [
            sse(
                openai_error(
                    message
                    or "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                )
            )
        ]

    def stream_preamble(self, cid: str, created: int, model: str) -> list[bytes]:
        return []

    def script(
        self, cid: str, model: str, plan: Plan, body: dict[str, Any], fault: Fault | None
    ) -> StreamScript:
        created = int(time.time())
        opts = body.get("stream_options")
        with_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        logprobs: list[dict[str, Any] | None] = []
        if plan.tool_call:
            first: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": plan.tool_call.id,
                        "type": "function",
                        "function": {"name": plan.tool_call.name, "arguments": ""},
                    }
                ],
                "refusal": None,
            }
            content: list[dict[str, Any]] = [
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                for piece in plan.tool_chunks
            ]
        else:
            first = {"role": "assistant", "content": "", "refusal": None}
            content = [{"content": piece} for piece in plan.chunks]
            if _logprobs([], body) is not None:
                logprobs = [_logprobs([piece], body) for piece in plan.chunks]
        head = [
            *self.stream_preamble(cid, created, model),
            sse(self.chunk(cid, created, model, first, None, with_usage)),
        ]
        tail = [sse(self.chunk(cid, created, model, {}, _FINISH[plan.finish], with_usage))]
        if with_usage:
            tail.append(
                sse(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "service_tier": "default",
                        "system_fingerprint": self.system_fingerprint,
                        "choices": [],
                        "usage": self.usage(plan),
                    }
                )
            )
        tail.append(sse("[DONE]"))
        return StreamScript(
            head=head,
            content=[
                sse(
                    self.chunk(
                        cid,
                        created,
                        model,
                        d,
                        None,
                        with_usage,
                        logprobs[i] if i < len(logprobs) else None,
                    )
                )
                for i, d in enumerate(content)
            ],
            tail=tail,
            error=self.stream_error_frames(fault.message if fault else None),
            content_type="text/event-stream; charset=utf-8",
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        fault, early = await self.admit(request)
        if early is not None:
            return early
        body = self.body(request)
        invalid = self.validate(request, body)
        if invalid is not None:
            return invalid
        plan = self.plan(body)
        model = self.model_name(request, body)
        cid = new_id("chatcmpl-", 29)
        return await respond(
            self,
            request,
            fault,
            stream=body.get("stream") is True,
            script=lambda: self.script(cid, model, plan, body, fault),
            payload=lambda: self.completion(cid, model, plan, body),
        )

    # ------------------------------------------------------------ embeddings
    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        _, early = await self.admit(request)
        if early is not None:
            return early
        body = self.body(request)
        if not isinstance(body, dict) or "input" not in body:
            return self.error(
                400, openai_error("'input' is a required property", "invalid_request_error")
            )
        raw: Any = body["input"]
        items: list[Any] = [raw] if isinstance(raw, str) else list(raw)
        if items and isinstance(items[0], int):
            items = [items]  # one token array
        texts = [x if isinstance(x, str) else " ".join(str(i) for i in x) for x in items]
        dims = body.get("dimensions") or 8
        vectors = [fake_vector(t, dims) for t in texts]
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
                if body.get("encoding_format") == "base64"
                else v,
            }
            for i, v in enumerate(vectors)
        ]
        tokens = sum(max(len(t.split()), 1) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": self.model_name(request, body) if "model" in body else "deployment",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # ------------------------------------------------------------- models
    def model_card(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1715367049, "owned_by": "system"}

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        return web.json_response(
            {"object": "list", "data": [self.model_card(m) for m in self.models]}
        )

    async def get_model(self, request: web.Request) -> web.StreamResponse:
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if model not in self.models:
            return self.model_not_found(model)
        return web.json_response(self.model_card(model))


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(math.ceil(value * 1000) / 1000)
