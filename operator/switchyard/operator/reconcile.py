"""The operator's core, apart from kopf: its index, the compile loop and the prober."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from switchyard.operator.compiler import Compiled, Verdict, compile_valid
from switchyard.operator.config import OperatorConfig
from switchyard.operator.probes import Prober, event_body
from switchyard.operator.publish import Publisher, conditions
from switchyard.operator.state import ClusterState, obj_of
from switchyard.router.contract import API_KEY_LABEL, KINDS, MODEL, PROVIDER
from switchyard.router.kube.client import KubeClient
from switchyard.router.kube.config import ClusterAccess
from switchyard.router.kube.errors import KubeError
from switchyard.router.kube.follow import follow
from switchyard.router.kube.resources import (
    CONFIGMAPS,
    ENDPOINT_SLICES,
    LLM_MODELS,
    LLM_PROVIDERS,
    PROMPT_TEMPLATES,
    SECRETS,
)
from switchyard.router.table.settings import parse_settings

log = logging.getLogger("switchyard.operator")

_KINDS = {k.plural: k.kind for k in KINDS}


class Operator:
    def __init__(self, config: OperatorConfig, access: ClusterAccess) -> None:
        self.config = config
        self.client = KubeClient(access, field_manager="switchyard-operator")
        self.state = ClusterState()
        self.publisher = Publisher(self.client, config)
        self.prober = Prober(self.state, self.publisher)
        self.tasks: list[asyncio.Task[None]] = []
        self.compiles = 0
        self._stopping = asyncio.Event()
        self._api_key_warned: dict[tuple[str, str], str] = {}
        self._endpoints_warned: dict[tuple[str, str], str] = {}

    async def start(self) -> None:
        await self.publisher.load_published()
        # List everything before the first compile: compiling from a half-filled
        # index would publish a table missing objects that exist, and routers
        # would drop them until the watch caught up.
        await self._initial_listing()
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(
                follow(
                    self.client,
                    CONFIGMAPS,
                    self.config.namespace,
                    self.config.settings_configmap,
                    self._settings_changed,
                    self._stopping,
                ),
                name="settings",
            ),
            loop.create_task(self._compile_loop(), name="compile"),
            loop.create_task(self.prober.run(), name="probes"),
            loop.create_task(self._confirm_listing(), name="confirm"),
        ]

    async def _initial_listing(self) -> None:
        started = time.monotonic()
        # Every namespace at once (None), or each watched one.
        scopes: tuple[str | None, ...] = self.config.watch_namespaces or (None,)
        for ns in scopes:
            for res in (LLM_PROVIDERS, LLM_MODELS, PROMPT_TEMPLATES):
                plural = res.plural
                for item in (await self.client.list(res, ns))[0]:
                    self.state.record(plural, "ADDED", item)
                    meta = item.get("metadata") or {}
                    self.state.unconfirmed.add(
                        (plural, (meta.get("namespace", ""), meta.get("name", "")))
                    )
            for item in (await self.client.list(SECRETS, ns, labels={API_KEY_LABEL: None}))[0]:
                self.state.record_secret("ADDED", item, API_KEY_LABEL)
            for item in (await self.client.list(ENDPOINT_SLICES, ns))[0]:
                self.state.record_slice("ADDED", item)
        for ns, name in sorted(self.state.referenced_secrets()):
            try:
                secret = await self.client.get(SECRETS, name, ns)
            except KubeError as exc:
                if exc.status == 404:
                    continue
                raise
            self.state.record_secret("ADDED", secret, API_KEY_LABEL)
        self.state.dirty.set()
        log.info(
            "listed %d providers, %d models, %d templates, %d API keys in %.1fs",
            len(self.state.providers),
            len(self.state.models),
            len(self.state.templates),
            len(self.state.api_keys),
            time.monotonic() - started,
        )

    async def _confirm_listing(self, grace: float = 60.0) -> None:
        await asyncio.sleep(grace)
        dropped = self.state.drop_unconfirmed()
        if dropped:
            log.info("forgot %d objects deleted while the operator started", dropped)

    async def _settings_changed(self, obj: dict[str, Any] | None) -> None:
        """The settings ConfigMap: ``settings.yaml`` with routing, cache and budgets.

        It also owns what the operator publishes (a Helm release's uninstall then takes
        that with it); its deletion changes no owner, so nothing is written again
        without one while a release is being removed.
        """
        if obj is not None and self.publisher.own(obj):
            self.state.dirty.set()
        text = ((obj or {}).get("data") or {}).get("settings.yaml", "")
        try:
            settings = parse_settings(text)
        except ValueError as exc:
            log.error(
                "%s/%s is invalid, keeping the previous settings: %s",
                self.config.namespace,
                self.config.settings_configmap,
                exc,
            )
            if obj is not None:
                await self.publisher.event(
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
                    "Warning",
                    "InvalidSettings",
                    str(exc),
                )
            return
        if settings != self.state.settings:
            self.state.settings = settings
            self.state.dirty.set()
            self.prober.settings_changed()

    async def stop(self) -> None:
        self._stopping.set()
        for task in self.tasks:
            task.cancel()
        await self.prober.close()
        await self.client.close()

    # -- events -----------------------------------------------------------------
    async def provider_changed(self, body: Mapping[str, Any], probe_request: str | None) -> None:
        o = obj_of(body)
        ref = o.spec.get("apiKeySecretRef") or {}
        if ref.get("name") and (o.namespace, ref["name"]) not in self.state.secrets:
            # The Secret may have been listed before this provider referenced it.
            try:
                secret = await self.client.get(SECRETS, ref["name"], o.namespace)
                self.state.record_secret("ADDED", secret, "")
            except KubeError as exc:
                if exc.status != 404:
                    log.warning("reading Secret %s/%s: %s", o.namespace, ref["name"], exc)
        self.prober.notice(o, probe_request)

    def secret_changed(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        for p in self.state.providers.values():
            ref = p.spec.get("apiKeySecretRef") or {}
            if (p.namespace, ref.get("name")) == key:
                self.prober.probe_now((p.namespace, p.name))

    # -- compiling ---------------------------------------------------------------
    async def _compile_loop(self) -> None:
        while True:
            await self.state.dirty.wait()
            await asyncio.sleep(self.config.debounce_seconds)
            self.state.dirty.clear()
            try:
                await self.compile_once()
            except Exception:
                log.exception("compiling the routing table failed; retrying")
                await asyncio.sleep(2)
                self.state.dirty.set()

    async def compile_once(self) -> Compiled:
        compiled, problem = await asyncio.to_thread(compile_valid, self.state.snapshot())
        if problem is not None:
            log.error("the compiled routing table is invalid, not publishing it: %s", problem)
            await self._write_verdicts(compiled)
            return compiled
        # Keys first: a table naming a key the router cannot find yet would make
        # that provider unusable for a moment.
        await self.publisher.publish_keys(compiled.provider_keys)
        await self.publisher.publish_table(compiled.document)
        self.compiles += 1
        await self._write_verdicts(compiled)
        return compiled

    async def _write_verdicts(self, compiled: Compiled) -> None:
        limit = asyncio.Semaphore(16)  # many small PATCHes, a few at a time

        async def one(plural: str, ns: str, name: str, verdict: Verdict) -> None:
            async with limit:
                await self._write_verdict(plural, ns, name, verdict)

        results = await asyncio.gather(
            *(
                one(plural, ns, name, verdict)
                for (plural, (ns, name)), verdict in compiled.verdicts.items()
                if plural != PROVIDER.plural  # the prober owns provider status
            ),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning(
                "%d status writes failed (first: %s); they are retried", len(failed), failed[0]
            )
            self.state.dirty.set()
        for key, problem in compiled.api_key_problems.items():
            if self._api_key_warned.get(key) != problem:
                self._api_key_warned[key] = problem
                log.warning("API key Secret %s/%s is ignored: %s", *key, problem)
        for key, problem in compiled.endpoint_problems.items():
            if self._endpoints_warned.get(key) != problem:
                self._endpoints_warned[key] = problem
                log.warning("LLMProvider %s/%s: %s", *key, problem)
                provider = self.state.providers.get(key)
                if provider is not None:
                    await self.publisher.event(
                        event_body(PROVIDER.kind, provider), "Warning", "Endpoints", problem
                    )
        for key in set(self._endpoints_warned) - set(compiled.endpoint_problems):
            del self._endpoints_warned[key]

    async def _write_verdict(self, plural: str, ns: str, name: str, verdict: Verdict) -> None:
        store = self.state.models if plural == MODEL.plural else self.state.templates
        o = store.get((ns, name))
        if o is None:
            return
        current = {c.get("type"): c for c in o.status.get("conditions") or []}.get("Ready")
        wanted = ("True" if verdict.ready else "False", verdict.reason, verdict.message)
        if (
            current is not None
            and o.status.get("observedGeneration") == o.generation
            and (current.get("status"), current.get("reason"), current.get("message")) == wanted
        ):
            return
        status: dict[str, Any] = {
            "observedGeneration": o.generation,
            "conditions": conditions(
                o.status.get("conditions"),
                {"Ready": (verdict.ready, verdict.reason, verdict.message)},
                o.generation,
            ),
        }
        await self.publisher.patch_status(plural, ns, name, status)
        o.status.update(status)  # only once written: a failed write is tried again
        if not verdict.ready:
            await self.publisher.event(
                event_body(_KINDS[plural], o), "Warning", verdict.reason, verdict.message
            )
