"""Fake Azure OpenAI (deployment-scoped Chat Completions, ``api-key`` auth)."""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

from aiohttp import web

from .openai import FakeOpenAI, _seconds, openai_error
from .server import sse

_SAFE = {"filtered": False, "severity": "safe"}


def _prompt_filter_results() -> list[dict[str, Any]]:
    return [
        {
            "prompt_index": 0,
            "content_filter_results": {
                "hate": dict(_SAFE),
                "jailbreak": {"filtered": False, "detected": False},
                "self_harm": dict(_SAFE),
                "sexual": dict(_SAFE),
                "violence": dict(_SAFE),
            },
        }
    ]


def _choice_filter_results() -> dict[str, Any]:
    return {
        "hate": dict(_SAFE),
        "protected_material_code": {"filtered": False, "detected": False},
        "protected_material_text": {"filtered": False, "detected": False},
        "self_harm": dict(_SAFE),
        "sexual": dict(_SAFE),
        "violence": dict(_SAFE),
    }


def azure_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class FakeAzureOpenAI(FakeOpenAI):
    """Azure OpenAI. ``models`` are deployment names; the response ``model`` is
    the deployment name too. Every request needs ``?api-version=``."""

    default_models: ClassVar[tuple[str, ...]] = ("gpt-4o-mini",)
    url_suffix: ClassVar[str] = ""
    system_fingerprint: ClassVar[str | None] = "fp_ee1d74bde0"
    region: ClassVar[str] = "East US"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.chat)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self.embeddings)
        app.router.add_get("/openai/models", self.list_models)
        app.router.add_get("/openai/deployments", self.list_deployments)

    def response_headers(
        self, request: web.Request, response: web.StreamResponse
    ) -> dict[str, str]:
        used = self.completions
        limited = response.status == 429
        rid = str(uuid.uuid4())
        return {
            "apim-request-id": rid,
            "x-request-id": rid,
            "x-ms-region": self.region,
            "x-ms-rai-invoked": "true",
            "x-ratelimit-limit-requests": str(self.request_limit),
            "x-ratelimit-limit-tokens": str(self.token_limit),
            "x-ratelimit-remaining-requests": "0"
            if limited
            else str(max(self.request_limit - used, 0)),
            "x-ratelimit-remaining-tokens": "0" if limited else str(self.token_limit - 100 * used),
            "azureml-model-session": "d089-20250101000000",
        }

    def fault_error(
        self, request: web.Request, status: int, message: str | None, retry_after: float | None
    ) -> web.Response:
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = _seconds(retry_after)
            headers["retry-after-ms"] = str(int(retry_after * 1000))
        version = request.query.get("api-version", "2024-10-21")
        if status == 429:
            wait = _seconds(retry_after) if retry_after is not None else "1"
            body = azure_error(
                "429",
                message
                or (
                    f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                    f"version {version} have exceeded call rate limit of your current OpenAI S0 "
                    f"pricing tier. Please retry after {wait} seconds. Please go here: "
                    "https://aka.ms/oai/quotaincrease if you would like to further increase the "
                    "default rate limit."
                ),
            )
            return self.error(status, body, headers)
        if status == 401:
            return self.error(status, self._denied_body(message), headers)
        if status == 404:
            return self.error(status, azure_error("404", message or "Resource not found"), headers)
        return super().fault_error(request, status, message, retry_after)

    @staticmethod
    def _denied_body(message: str | None = None) -> dict[str, Any]:
        return azure_error(
            "401",
            message
            or (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource."
            ),
        )

    def check_auth(self, request: web.Request) -> web.Response | None:
        if "api-version" not in request.query:
            return self.error(404, azure_error("404", "Resource not found"))
        if self.api_key is None:
            return None
        key = request.headers.get("api-key")
        if key is None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if key != self.api_key:
            return self.error(401, self._denied_body())
        return None

    def validate(self, request: web.Request, body: Any) -> web.Response | None:
        deployment = request.match_info["deployment"]
        if deployment not in self.models:
            return self.error(
                404,
                azure_error(
                    "DeploymentNotFound",
                    "The API deployment for this resource does not exist. If you created the "
                    "deployment within the last 5 minutes, please wait a moment and try again.",
                ),
            )
        if self.bad_json(request) or not isinstance(body, dict):
            return self.bad_request("Invalid JSON body.")
        if (bad := self.check_messages(body)) is not None:
            return bad
        return None

    def model_name(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(request.match_info["deployment"])

    def completion(
        self, cid: str, model: str, plan: Any, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        out = super().completion(cid, model, plan, body)
        out.pop("service_tier", None)
        out["prompt_filter_results"] = _prompt_filter_results()
        return out

    def decorate_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {**choice, "content_filter_results": _choice_filter_results()}

    def decorate_chunk_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        delta = choice.get("delta") or {}
        filtered = bool(delta.get("content"))
        return {**choice, "content_filter_results": _choice_filter_results() if filtered else {}}

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
        return out

    def stream_preamble(self, cid: str, created: int, model: str) -> list[bytes]:
        # Azure opens every stream with the prompt's content-filter verdict.
        return [
            sse(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": _prompt_filter_results(),
                }
            )
        ]

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

    # ------------------------------------------------------------- models
    async def list_models(self, request: web.Request) -> web.StreamResponse:
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        now = int(time.time())
        data = [
            {
                "id": m,
                "object": "model",
                "status": "succeeded",
                "created_at": now,
                "updated_at": now,
                "capabilities": {
                    "fine_tune": False,
                    "inference": True,
                    "completion": False,
                    "chat_completion": True,
                    "embeddings": False,
                },
                "lifecycle_status": "generally-available",
                "deprecation": {"inference": now + 365 * 86400},
            }
            for m in self.models
        ]
        return web.json_response({"data": data, "object": "list"})

    async def list_deployments(self, request: web.Request) -> web.StreamResponse:
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        now = int(time.time())
        data = [
            {
                "scale_settings": {"scale_type": "standard"},
                "model": m,
                "owner": "organization-owner",
                "id": m,
                "status": "succeeded",
                "created_at": now,
                "updated_at": now,
                "object": "deployment",
            }
            for m in self.models
        ]
        return web.json_response({"data": data, "object": "list"})
