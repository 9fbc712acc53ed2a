"""Build the router's ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.router.contract import CacheSettings, RoutingTable
from switchyard.router.core.accounting import Accountant
from switchyard.router.core.budgets import BudgetGuard
from switchyard.router.core.cache import ResponseCache
from switchyard.router.core.catalog import Route as CatalogRoute
from switchyard.router.core.conversations import Conversations
from switchyard.router.core.gateway import Gateway
from switchyard.router.core.pipeline import Pipeline
from switchyard.router.core.retention import UsageRetention
from switchyard.router.errors import (
    BadRequest,
    ClientDisconnected,
    InternalError,
    NotFound,
    SwitchyardError,
)
from switchyard.router.heap import Trimmer
from switchyard.router.http import (
    admin,
    anthropic_api,
    cluster_api,
    console,
    embeddings_api,
    models_api,
    native,
    openai_api,
    openapi,
    ops,
    responses_api,
    usage_api,
)
from switchyard.router.http.errors import error_response, flavor_for
from switchyard.router.http.hot_request import HotRequest
from switchyard.router.http.ops import PortSplit
from switchyard.router.http.services import Services, services
from switchyard.router.metrics import Metrics
from switchyard.router.providers.registry import make_adapter
from switchyard.router.storage.factory import make_store, open_until_ready
from switchyard.router.storage.recorder import RecorderMetrics, UsageRecorder
from switchyard.router.storage.spool import Spool
from switchyard.router.table.secrets import KeyRing
from switchyard.router.table.source import FileSource, Follower
from switchyard.router.tracing import TraceConfig, Tracing

if TYPE_CHECKING:
    from switchyard.router.kube.client import KubeClient
    from switchyard.router.kube.model_reports import ModelReports
    from switchyard.router.storage.shared_state import SharedState

log = logging.getLogger("switchyard.router")


async def _switchyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SwitchyardError)
    if isinstance(exc, InternalError):
        services(request).metrics.internal_errors.inc()
    elif isinstance(exc, ClientDisconnected):
        # Nobody reads the answer; the log says why the request ended.
        log.info("%s %s: %s", request.method, request.url.path, exc.message)
    else:
        # Refusals are the client's business, but an operator asked why needs a line.
        log.info(
            "%s %s: %d %s: %s", request.method, request.url.path, exc.status, exc.code, exc.message
        )
    return error_response(exc, flavor_for(request.url.path, request.headers))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    flavor = flavor_for(request.url.path, request.headers)
    if exc.status_code == 404:
        err: SwitchyardError = NotFound(f"no such endpoint: {request.url.path}")
    else:
        err = BadRequest(f"{exc.detail}")
        err.status = exc.status_code
        err.code = "method_not_allowed" if exc.status_code == 405 else "http_error"
    response = error_response(err, flavor)
    # 405 carries Allow, naming the methods the path serves.
    response.headers.update(exc.headers or {})
    return response


async def _crash(request: Request, exc: Exception) -> Response:
    """The one place an unexpected error is logged (``server`` keeps uvicorn from repeating it)."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    services(request).metrics.internal_errors.inc()
    err = InternalError("internal error; see the router's log")
    return error_response(err, flavor_for(request.url.path, request.headers))


Endpoint = Callable[[Request], Awaitable[Response]]


class RouterApp(Starlette):
    """Starlette, with the generating endpoints' POSTs dispatched straight to them.

    Those requests are nearly all the router serves, and the layers Starlette puts
    around every endpoint (error middleware, port split, exception middleware, path
    matching, request wrapper: each a call and, for the middleware, a wrapped ``send``
    for every streamed chunk) cost a tenth of the router's own time on them. Their
    errors are answered by the same handlers, in the same way. Anything else, and any
    request on the admin port, goes through Starlette as before.
    """

    hot: Mapping[str, Endpoint] = {}
    admin_port: int | None = None
    services: Services

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.hot.get(scope["path"])
            if endpoint is not None and (
                self.admin_port is None or scope["server"][1] != self.admin_port
            ):
                scope["app"] = self
                await self._serve(endpoint, HotRequest(scope, receive, send), scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    @staticmethod
    async def _serve(
        endpoint: Endpoint, request: Request, scope: Any, receive: Any, send: Any
    ) -> None:
        try:
            response = await endpoint(request)
        except SwitchyardError as exc:
            response = await _switchyard_error(request, exc)
        except HTTPException as exc:
            response = await _http_error(request, exc)
        except Exception as exc:
            # As Starlette's error middleware: answer, then raise for the server, which
            # keeps it from being logged twice (``server._OneLog``).
            await (await _crash(request, exc))(scope, receive, send)
            raise
        try:
            await response(scope, receive, send)
        except Exception as exc:
            await _crash(request, exc)  # logged and counted; the answer had begun
            raise


def _namespaced(value: str, flag: str) -> tuple[str, str]:
    ns, sep, name = value.partition("/")
    if not sep or not ns or not name:
        raise ValueError(f"{flag} takes NAMESPACE/NAME, got {value!r}")
    return ns, name


def create_app(
    config: str | Path | None = None,
    *,
    routing_configmap: str | None = None,
    provider_keys_dir: str | Path | None = None,
    provider_keys_secret: str | None = None,
    kubeconfig: str | None = None,
    reload_interval: float = 1.0,
    database_url: str | None = None,
    sqlite_path: str | Path = "switchyard.db",
    spool_path: str | Path | None = None,
    record_usage: bool = True,
    redis_url: str | None = None,
    usage_record_days: int = 0,
    processes: int = 1,
    admin_port: int | None = None,
    tracing: TraceConfig | None = None,
) -> RouterApp:
    """An app serving a routing table; raises ConfigError if a table file is bad.

    The table comes from ``config`` (a file, or a directory holding a mounted
    ConfigMap) or from ``routing_configmap`` ("namespace/name", watched through
    the API). Provider keys the operator publishes come from a mounted
    directory or from a Secret watched through the API. Usage, the response
    cache and budgets live in PostgreSQL when ``database_url`` is given, else
    in the SQLite file at ``sqlite_path``. With ``redis_url``, providers' rate budgets,
    spending in flight and breaker news are shared with every other router using the
    same Redis. With ``admin_port``, liveness, readiness and metrics answer on that port
    only, and the API on every other (``http.ops``). With ``tracing``, sampled requests
    are traced and their spans exported over OTLP (``tracing``).
    """
    if (config is None) == (routing_configmap is None):
        raise ValueError("give exactly one of a table file (--config) or --routing-configmap")
    metrics = Metrics()
    gateway = Gateway(metrics, make_adapter)
    # One of several processes on this port (--workers): its own budgets are its share.
    gateway.states.processes = processes
    store = make_store(database_url, sqlite_path)
    spool = Spool(spool_path or Path(sqlite_path).with_name("usage-spool.jsonl"))
    shared: SharedState | None = None
    if redis_url:
        from switchyard.router.storage.shared_state import SharedState

        shared = SharedState(
            redis_url,
            metrics,
            gateway.news,
            on_processes=gateway.states.share,
        )
        gateway.verdicts.shared = shared
    budgets = BudgetGuard(store, shared=shared, metrics=metrics)
    recorder = UsageRecorder(
        store, spool, RecorderMetrics(metrics.registry), on_stored=budgets.stored
    )
    cache = ResponseCache(store, CacheSettings())
    conversations = Conversations(store, metrics)
    retention = UsageRetention(store, usage_record_days)

    def known_model(organization: str, name: str) -> bool:
        catalog = gateway.catalog
        return catalog is not None and name in catalog.org(organization).by_name

    accountant = Accountant(metrics, known_model, recorder if record_usage else None, budgets)
    pipeline = Pipeline(gateway, accountant, cache, budgets)
    services = Services(
        gateway=gateway,
        pipeline=pipeline,
        accountant=accountant,
        metrics=metrics,
        store=store,
        conversations=conversations,
        started_at=time.time(),
        tracing=Tracing(tracing) if tracing is not None else None,
    )

    def install(table: RoutingTable, checksum: str) -> None:
        gateway.install(table, checksum)
        cache.configure(table.cache)
        budgets.configure(table.budgets)

    def on_result(result: str, error: str | None) -> None:
        metrics.table_reloads.labels(result).inc()
        services.table_error = error
        services.table_loads += 1

    if provider_keys_dir is not None:
        gateway.keyring = KeyRing(provider_keys_dir)
    follower: Follower
    keys: Follower | None = None
    kube: KubeClient | None = None
    reports: ModelReports | None = None
    if routing_configmap is None:
        assert config is not None
        follower = FileSource(config, install, on_result, reload_interval)
    if routing_configmap is not None or provider_keys_secret is not None:
        # Only a router that follows a cluster loads a Kubernetes client.
        from switchyard.router.kube.client import KubeClient
        from switchyard.router.kube.config import load as load_kubeconfig
        from switchyard.router.kube.model_reports import ModelReports
        from switchyard.router.table.api_source import ConfigMapSource, SecretKeySource

        kube = services.kube = KubeClient(load_kubeconfig(kubeconfig))
        reports = ModelReports(kube)

        def on_model(route: CatalogRoute, out: bool, message: str) -> None:
            cooldown = gateway.require_catalog().settings.breaker.cooldown_seconds
            m = route.model
            reports.report(m.organization, m.object_name, out, message, cooldown)

        gateway.verdicts.on_model = on_model
        if routing_configmap is not None:
            ns, name = _namespaced(routing_configmap, "--routing-configmap")
            follower = ConfigMapSource(kube, ns, name, install, on_result)
        if provider_keys_secret is not None:

            def new_keys(values: dict[str, str]) -> None:
                gateway.keyring.values = values
                gateway.keyring.source = f"secret {provider_keys_secret}"
                if gateway.catalog is not None:  # resolve the keys again
                    install(gateway.catalog.table, gateway.catalog.checksum)

            ns, name = _namespaced(provider_keys_secret, "--provider-keys-secret")
            keys = SecretKeySource(kube, ns, name, new_keys)
    follower.load_initial()
    services.table_source = follower.description

    trimmer = Trimmer()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opening = await open_until_ready(store)
        recorder.start()
        cache.start()
        conversations.start()
        retention.start()
        if shared is not None:
            await shared.start()
        budgets.start()
        if keys is not None:
            await keys.start()
        await follower.start()
        trimmer.start()
        try:
            yield
        finally:
            # uvicorn has stopped taking requests and let the open ones finish.
            await trimmer.close()
            await follower.stop()
            if keys is not None:
                await keys.stop()
            if kube is not None:
                gateway.verdicts.on_model = None
                if reports is not None:
                    await reports.close()
                await kube.close()
            if shared is not None:
                await shared.close()
            await budgets.close()
            await cache.close()
            await conversations.close()
            await retention.close()
            await recorder.close()
            if opening is not None:
                opening.cancel()
            await gateway.close()
            await store.close()
            if services.tracing is not None:
                # Export what is queued; the SDK's exporter blocks, off the event loop.
                await asyncio.to_thread(services.tracing.shutdown)

    routes = [
        Route("/api/v1/llm/completion", native.completion, methods=["POST"]),
        Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
        Route("/v1/models", models_api.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models_api.get_model, methods=["GET"]),
        Route("/v1/messages", anthropic_api.messages, methods=["POST"]),
        Route("/v1/responses", responses_api.responses, methods=["POST"]),
        Route(
            "/v1/responses/{response_id}", responses_api.kept_response, methods=["GET", "DELETE"]
        ),
        Route(
            "/v1/responses/{response_id}/input_items",
            responses_api.input_items,
            methods=["GET"],
        ),
        Route("/v1/messages/count_tokens", anthropic_api.count_tokens, methods=["POST"]),
        Route("/v1/embeddings", embeddings_api.embeddings, methods=["POST"]),
        Route("/api/v1/llm/providers", admin.list_providers, methods=["GET"]),
        Route("/api/v1/llm/providers", cluster_api.create_provider, methods=["POST"]),
        Route("/api/v1/llm/providers/{name}/health-check", admin.health_check, methods=["POST"]),
        Route("/api/v1/llm/usage", usage_api.usage, methods=["GET"]),
        Route("/api/v1/llm/templates", admin.list_templates, methods=["GET"]),
        Route("/api/v1/llm/templates/render", admin.render_template, methods=["POST"]),
        Route("/console", console.page, methods=["GET"]),
        Route("/console/assets/{name}", console.asset, methods=["GET"]),
        Route("/console/api/usage", console.usage, methods=["GET"]),
        Route("/console/api/health", console.health, methods=["GET"]),
        Route("/console/api/requests", console.recent, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
    ]
    app = RouterApp(
        routes=routes,
        middleware=[Middleware(PortSplit, admin_port=admin_port)] if admin_port else None,
        lifespan=lifespan,
        exception_handlers={
            SwitchyardError: _switchyard_error,
            HTTPException: _http_error,
            Exception: _crash,
        },
    )
    app.services = services
    app.state.follower = follower
    app.hot = {
        "/api/v1/llm/completion": native.completion,
        "/v1/chat/completions": openai_api.chat_completions,
        "/v1/messages": anthropic_api.messages,
        "/v1/responses": responses_api.responses,
        "/v1/embeddings": embeddings_api.embeddings,
    }
    app.admin_port = admin_port
    return app
