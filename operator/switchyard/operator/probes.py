"""Provider health: a tiny real request on each provider's own interval.

One scheduler for all providers (no per-object daemons, so no finalizers):
it probes what is due, a few at a time, and writes each provider's status:
health, consecutive failures, latency, the models it serves, and a Ready
condition with a specific reason. Events mark the transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from pydantic import ValidationError

from switchyard.operator.compiler import secret_key_name
from switchyard.operator.publish import Publisher, conditions, now
from switchyard.operator.state import ClusterState, Key, Obj
from switchyard.router.contract import (
    API_VERSION,
    MODEL,
    PROVIDER,
    Provider,
    ProviderNetworks,
    RoutingSettings,
    networks,
    url_refusal,
)
from switchyard.router.core.adapter import Adapter, ProbeResult
from switchyard.router.providers.registry import make_adapter

log = logging.getLogger("switchyard.operator.probes")

#: Consecutive failed probes before a provider is unhealthy (before: degraded).
UNHEALTHY_AFTER = 3
MAX_DISCOVERED = 500


#: LLMProvider fields that are not the table's: a probe calls the provider at its
#: baseUrl (a serviceRef's Service itself), or at the endpoints listed by hand.
_NOT_IN_TABLE = ("apiKeySecretRef", "healthCheck", "serviceRef")


def provider_model(p: Obj, key: str | None) -> Provider:
    spec = {k: v for k, v in p.spec.items() if k not in _NOT_IN_TABLE}
    if key is not None:
        spec["apiKey"] = {"secretKey": secret_key_name(p.namespace, p.name)}
    return Provider.model_validate({"name": p.name, "organization": p.namespace, **spec})


def event_body(kind: str, o: Obj) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": o.name, "namespace": o.namespace, "uid": o.uid},
    }


class Prober:
    def __init__(self, state: ClusterState, publisher: Publisher, concurrency: int = 16) -> None:
        self.state = state
        self.publisher = publisher
        self._due: dict[Key, float] = {}
        self._handled_requests: dict[Key, str] = {}
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        self._adapters: dict[Key, tuple[Any, Adapter]] = {}
        self._running: set[Key] = set()
        #: Probes in flight, cancelled when the operator stops.
        self._tasks: set[asyncio.Task[None]] = set()
        self._networks_seen = ProviderNetworks()

    def probe_now(self, key: Key) -> None:
        self._due[key] = 0.0
        self._wake.set()

    def settings_changed(self) -> None:
        """The settings changed: if what providers may reach did, every provider is
        probed again now (one refused may be allowed, one allowed refused), not at its
        next interval."""
        networks = self._networks()
        if networks != self._networks_seen:
            self._networks_seen = networks
            for key in list(self.state.providers):
                self.probe_now(key)

    def notice(self, o: Obj, request_annotation: str | None) -> None:
        """A provider changed: probe new ones and ones asked for a fresh probe."""
        key = (o.namespace, o.name)
        if key not in self._due:
            self.probe_now(key)
        if request_annotation and self._handled_requests.get(key) != request_annotation:
            self._handled_requests[key] = request_annotation
            self.probe_now(key)

    async def run(self) -> None:
        while True:
            now_t = time.monotonic()
            for key in list(self._due):
                if key not in self.state.providers:
                    self._due.pop(key, None)
                    await self._drop_adapter(key)
            for key, p in list(self.state.providers.items()):
                check = p.spec.get("healthCheck") or {}
                if check.get("enabled", True) is False:
                    continue
                due = self._due.setdefault(key, 0.0)
                if due <= now_t and key not in self._running:
                    self._running.add(key)
                    task = asyncio.get_running_loop().create_task(self._probe(key))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            upcoming = [d for k, d in self._due.items() if k not in self._running]
            wait = min([*upcoming, now_t + 1.0]) - time.monotonic()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.05, wait))

    async def _drop_adapter(self, key: Key) -> None:
        old = self._adapters.pop(key, None)
        if old is not None:
            await old[1].close()

    def _networks(self) -> ProviderNetworks:
        """What the table lets providers reach beyond the defaults: the probes reach no
        further than the routers do."""
        routing = self.state.settings.get("routing")
        try:
            return RoutingSettings.model_validate(routing or {}).provider_networks
        except ValidationError:
            return ProviderNetworks()

    async def _adapter(self, key: Key, provider: Provider, secret: str | None) -> Adapter:
        networks = self._networks()
        identity = (provider.model_dump_json(), secret, networks)
        old = self._adapters.get(key)
        if old is not None and old[0] == identity:
            return old[1]
        await self._drop_adapter(key)
        adapter = make_adapter(provider, secret, networks)
        self._adapters[key] = (identity, adapter)
        return adapter

    async def _probe(self, key: Key) -> None:
        try:
            async with self._limit:
                await self._probe_one(key)
        except Exception:
            log.exception("probing %s/%s failed", *key)
        finally:
            self._running.discard(key)
            p = self.state.providers.get(key)
            interval = int(
                ((p.spec.get("healthCheck") or {}) if p else {}).get("intervalSeconds", 30)
            )
            if self._due.get(key, 1.0) != 0.0:  # not asked again meanwhile
                self._due[key] = time.monotonic() + interval
            self._wake.set()

    async def _probe_one(self, key: Key) -> None:
        p = self.state.providers.get(key)
        if p is None:
            return
        self._due[key] = time.monotonic() + 3600  # marks "running"; set again in _probe
        secret, key_problem = self.state.provider_key(p)
        failures = int(p.status.get("consecutiveFailures") or 0)
        previous = p.status.get("health", "unknown")
        body = event_body(PROVIDER.kind, p)
        try:
            provider = provider_model(p, secret)
        except ValidationError as exc:
            await self._write(
                p,
                "unknown",
                failures,
                None,
                f"invalid spec: {exc}",
                [],
                (False, "InvalidSpec", str(exc)[:500]),
            )
            return
        refused = url_refusal(
            provider.provider_type, provider.url, networks(self._networks().allow_cidrs)
        )
        if refused is not None:
            # Never probed: the address policy is the routers' too.
            reason = f"{refused}: it is not reached"
            if _ready_reason(p) != "BaseUrlRefused":
                await self.publisher.event(body, "Warning", "BaseUrlRefused", reason)
            await self._write(
                p, "unhealthy", failures, None, reason, [], (False, "BaseUrlRefused", reason)
            )
            return
        if key_problem is not None:
            if p.status.get("conditions") is None or _ready_reason(p) != "ApiKeyMissing":
                await self.publisher.event(body, "Warning", "ApiKeyMissing", key_problem)
            await self._write(
                p, "unknown", failures, None, key_problem, [], (False, "ApiKeyMissing", key_problem)
            )
            return
        models = [
            str(m.spec.get("modelName"))
            for m in self.state.models.values()
            if m.namespace == p.namespace
            and (m.spec.get("providerRef") or {}).get("name") == p.name
        ]
        adapter = await self._adapter(key, provider, secret)
        probed = models
        result: ProbeResult = await adapter.probe(models)
        if result.status == "unhealthy":
            failures += 1
            # A refused address is not a passing fault: it stays refused until the
            # provider or the policy changes.
            out = result.refused or failures >= UNHEALTHY_AFTER
            health = "unhealthy" if out else "degraded"
        else:
            failures = 0
            health = result.status
        if result.refused:
            # Its name resolves to an address the policy refuses: never connected to.
            if _ready_reason(p) != "BaseUrlRefused":
                await self.publisher.event(body, "Warning", "BaseUrlRefused", result.message)
        elif health == "unhealthy" and previous != "unhealthy":
            await self.publisher.event(
                body,
                "Warning",
                "HealthCheckFailed",
                f"{failures} consecutive failed health checks: {result.message}",
            )
        elif health == "healthy" and previous in ("unhealthy", "degraded"):
            await self.publisher.event(
                body, "Normal", "HealthCheckRecovered", "health checks pass again"
            )
        # The status field is a set of names of at most 256 characters.
        models = sorted({m for m in result.models if 0 < len(m) <= 256})[:MAX_DISCOVERED]
        if models and models != sorted(p.status.get("discoveredModels") or []):
            await self.publisher.event(
                body,
                "Normal",
                "ModelsDiscovered",
                f"{len(result.models)} models: {', '.join(models[:10])}"
                + (" ..." if len(models) > 10 else ""),
            )
        if result.refused:
            ready = (False, "BaseUrlRefused", result.message)
        elif health != "unhealthy":
            ready = (True, "HealthCheckPassed", result.message)
        else:
            ready = (False, "HealthCheckFailed", result.message)
        await self._write(p, health, failures, result.latency_ms, result.message, models, ready)
        await self._write_serving(p, health, result, probed)

    async def _write_serving(
        self, p: Obj, health: str, result: ProbeResult, probed: list[str]
    ) -> None:
        """Each of the provider's models: a Serving condition saying whether the provider
        serves it, so that a mis-named model says so on its own object. A model that
        arrived during the probe waits for the next one."""
        for m in list(self.state.models.values()):
            if m.namespace != p.namespace or (m.spec.get("providerRef") or {}).get("name") != (
                p.name
            ):
                continue
            name = str(m.spec.get("modelName"))
            if name not in probed:
                continue
            seen = m.status.get("router") or {}
            if health == "unhealthy":
                wanted = (False, "ProviderUnhealthy", f"provider {p.name}: {result.message}")
            elif seen.get("state") == "out":
                wanted = (
                    False,
                    "ModelFailing",
                    f"router {seen.get('replica', '?')} took it out at {seen.get('at', '?')} "
                    f"(tried again after {seen.get('retrySeconds', '?')} s): "
                    f"{seen.get('message', '')}",
                )
            elif name in result.missing:
                wanted = (
                    False,
                    "ModelNotServed",
                    f"provider {p.name}'s model listing does not hold {name!r}; requests for "
                    "it are sent to the other models of its group",
                )
            else:
                wanted = (True, "ProviderServesModel", f"provider {p.name} answers for it")
            current = {c.get("type"): c for c in m.status.get("conditions") or []}.get("Serving")
            if current is not None and (
                current.get("status") == ("True" if wanted[0] else "False")
                and current.get("reason") == wanted[1]
            ):
                continue
            status = {
                "conditions": conditions(
                    m.status.get("conditions"), {"Serving": wanted}, m.generation
                )
            }
            if not wanted[0]:
                await self.publisher.event(
                    event_body(MODEL.kind, m), "Warning", wanted[1], wanted[2]
                )
            try:
                await self.publisher.patch_status(MODEL.plural, m.namespace, m.name, status)
            except Exception as exc:  # written again at the next probe
                log.warning("cannot write the status of model %s/%s: %s", m.namespace, m.name, exc)
                continue
            m.status.update(status)

    async def _write(
        self,
        p: Obj,
        health: str,
        failures: int,
        latency: float | None,
        message: str,
        models: list[str],
        ready: tuple[bool, str, str],
    ) -> None:
        status: dict[str, Any] = {
            "observedGeneration": p.generation,
            "health": health,
            "consecutiveFailures": failures,
            "lastCheckTime": now(precise=True),
            "latencyMs": None if latency is None else round(latency),
            "message": message[:1024],
            "discoveredModels": models,
            "conditions": conditions(p.status.get("conditions"), {"Ready": ready}, p.generation),
        }
        # The state sees this through the watch; update it now too, so the next
        # probe counts failures from here even if the event is late.
        if p.status.get("health") != health:
            self.state.dirty.set()  # the table carries each provider's health
        p.status.update(status)
        await self.publisher.patch_status(PROVIDER.plural, p.namespace, p.name, status)

    async def close(self) -> None:
        # A probe in flight would write with a client that is closing.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for key in list(self._adapters):
            await self._drop_adapter(key)


def _ready_reason(p: Obj) -> str | None:
    for c in p.status.get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("reason"))
    return None
