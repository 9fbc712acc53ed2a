"""Fake Ollama native API (``/api/chat``, ``/api/tags``, ``/api/version``, ``/api/show``).

``/api/chat`` streams NDJSON unless ``"stream": false``. Errors are
``{"error": "..."}``. As in Ollama, a request without ``messages`` is a
model-load request and answers ``done_reason: "load"``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

from aiohttp import web

from .content import (
    Plan,
    ToolSpec,
    build_plan,
    choose_tool,
    fake_vector,
    prompt_tokens,
    structured_reply,
    text_of,
)
from .faults import Fault
from .openai import _seconds
from .server import FakeServer, StreamScript, ndjson, respond

_DONE = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool_use": "stop"}
_NDJSON = "application/x-ndjson"


def created_at() -> str:
    """RFC 3339 UTC timestamp with nanoseconds, as Ollama writes it."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


class FakeOllama(FakeServer):
    default_models: ClassVar[tuple[str, ...]] = ("llama3.2:latest",)
    version: ClassVar[str] = "0.12.6"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: list[str] | None = None,
        reply: str | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        # Ollama has no authentication; api_key is kept only for the shared interface.
        super().__init__(api_key=api_key, models=models, reply=reply, chunk_delay=chunk_delay)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/embed", self.embed)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/version", self.get_version)
        app.router.add_post("/api/show", self.show)
        app.router.add_get("/", self.root)

    def resolve(self, name: str) -> str | None:
        """Ollama treats ``name`` and ``name:latest`` as the same model."""
        full = name if ":" in name else f"{name}:latest"
        return full if full in self.models else (name if name in self.models else None)

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response({"error": message}, status=status, headers=headers)

    def fault_error(
        self, request: web.Request, status: int, message: str | None, retry_after: float | None
    ) -> web.Response:
        headers = {"Retry-After": _seconds(retry_after)} if retry_after is not None else None
        default = {
            429: "server busy, please try again.  maximum pending requests exceeded",
            503: "server busy, please try again.  maximum pending requests exceeded",
        }.get(status, "an error was encountered while running the model: unexpected EOF")
        return self.error(status, message or default, headers)

    def not_found(self, name: str) -> web.Response:
        return self.error(404, f'model "{name}" not found, try pulling it first')

    # ------------------------------------------------------------ answers
    def plan(self, body: dict[str, Any]) -> Plan:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
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
        tool = choose_tool(
            tools,
            None,
            last_user_text=text_of(last.get("content")) if last.get("role") == "user" else None,
        )
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        assert isinstance(options, dict)
        stop = options.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
        num_predict = options.get("num_predict")
        reply = self.reply
        fmt = body.get("format")
        if reply is None and (fmt == "json" or isinstance(fmt, dict)):
            reply = structured_reply(
                fmt if isinstance(fmt, dict) else None, text_of(last_user.get("content"))
            )
        return build_plan(
            reply=reply,
            last_user_text=text_of(last_user.get("content")),
            prompt_tokens=prompt_tokens(messages),
            max_tokens=num_predict if isinstance(num_predict, int) and num_predict >= 0 else None,
            stop=stops,
            tool=tool,
        )

    @staticmethod
    def final(
        model: str, plan: Plan, content: str, tool_calls: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        eval_duration = 12_000_000 * max(plan.completion_tokens, 1)
        prompt_eval_duration = 2_000_000 * max(plan.prompt_tokens, 1)
        load_duration = 25_000_000
        return {
            "model": model,
            "created_at": created_at(),
            "message": message,
            "done": True,
            "done_reason": _DONE[plan.finish],
            "total_duration": load_duration + prompt_eval_duration + eval_duration + 1_000_000,
            "load_duration": load_duration,
            "prompt_eval_count": plan.prompt_tokens,
            "prompt_eval_duration": prompt_eval_duration,
            "eval_count": plan.completion_tokens,
            "eval_duration": eval_duration,
        }

    @staticmethod
    def tool_calls(plan: Plan) -> list[dict[str, Any]] | None:
        if not plan.tool_call:
            return None
        return [
            {
                "id": plan.tool_call.id,
                "function": {
                    "index": 0,
                    "name": plan.tool_call.name,
                    "arguments": plan.tool_call.arguments,
                },
            }
        ]

    def script(self, model: str, plan: Plan, fault: Fault | None) -> StreamScript:
        def piece(content: str) -> bytes:
            return ndjson(
                {
                    "model": model,
                    "created_at": created_at(),
                    "message": {"role": "assistant", "content": content},
                    "done": False,
                }
            )

        if plan.tool_call:
            # Ollama emits a parsed tool call as one message, not as fragments.
            calls = self.tool_calls(plan)
            content = [
                ndjson(
                    {
                        "model": model,
                        "created_at": created_at(),
                        "message": {"role": "assistant", "content": "", "tool_calls": calls},
                        "done": False,
                    }
                )
            ]
        else:
            content = [piece(p) for p in plan.chunks]
        message = (fault.message if fault else None) or (
            "an error was encountered while running the model: unexpected EOF"
        )
        return StreamScript(
            head=[],
            content=content,
            tail=[ndjson(self.final(model, plan, "", None))],
            error=[ndjson({"error": message})],
            content_type=_NDJSON,
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        fault, early = await self.admit(request)
        if early is not None:
            return early
        body = self.body(request)
        if self.bad_json(request) or not isinstance(body, dict):
            return self.error(400, "invalid character looking for beginning of value")
        name = body.get("model")
        if not name:
            return self.error(400, "model is required")
        model = self.resolve(str(name))
        if model is None:
            return self.not_found(str(name))
        stream = body.get("stream") is not False
        if not body.get("messages"):
            loaded = {
                "model": str(name),
                "created_at": created_at(),
                "message": {"role": "assistant", "content": ""},
                "done_reason": "load",
                "done": True,
            }
            return web.json_response(loaded, content_type=_NDJSON if stream else "application/json")
        plan = self.plan(body)
        return await respond(
            self,
            request,
            fault,
            stream=stream,
            script=lambda: self.script(str(name), plan, fault),
            payload=lambda: self.final(str(name), plan, plan.text, self.tool_calls(plan)),
        )

    # ------------------------------------------------------------- models
    @staticmethod
    def details(model: str) -> dict[str, Any]:
        family = model.split(":")[0].rstrip("0123456789.").split("-")[0] or "llama"
        return {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        }

    async def embed(self, request: web.Request) -> web.StreamResponse:
        _, early = await self.admit(request)
        if early is not None:
            return early
        body = self.body(request)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return web.json_response({"error": "model is required"}, status=400)
        name = self.resolve(body["model"])
        if name is None:
            return web.json_response(
                {"error": f'model "{body["model"]}" not found, try pulling it first'},
                status=404,
            )
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return web.json_response({"error": "invalid input type"}, status=400)
        dims = body.get("dimensions") or 8
        return web.json_response(
            {
                "model": name,
                "embeddings": [fake_vector(t, dims) for t in texts],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": sum(max(len(t.split()), 1) for t in texts),
            }
        )

    async def tags(self, request: web.Request) -> web.StreamResponse:
        models = [
            {
                "name": m,
                "model": m,
                "modified_at": "2025-05-04T17:37:44.706015396-07:00",
                "size": 2019393189,
                "digest": hashlib.sha256(m.encode()).hexdigest(),
                "details": self.details(m),
            }
            for m in self.models
        ]
        return web.json_response({"models": models})

    async def get_version(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"version": self.version})

    async def show(self, request: web.Request) -> web.StreamResponse:
        body = self.body(request)
        name = (
            str((body or {}).get("model") or (body or {}).get("name") or "")
            if isinstance(body, dict)
            else ""
        )
        model = self.resolve(name)
        if model is None:
            return self.not_found(name)
        return web.json_response(
            {
                "modelfile": f"FROM {model}\n",
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": self.details(model),
                "model_info": {"general.architecture": self.details(model)["family"]},
                "capabilities": ["completion", "tools"],
                "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            }
        )

    async def root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="Ollama is running")
