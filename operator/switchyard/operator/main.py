"""The operator's wiring: kopf handlers only. Run with ``switchyard operator``.

Watch events keep the operator's index (``state``); a compile loop turns the
index into the routing table whenever it changed; a scheduler probes each
provider on its own interval. See docs/operator.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from switchyard.operator.config import OperatorConfig
from switchyard.operator.reconcile import Operator
from switchyard.router.contract import (
    API_KEY_LABEL,
    GROUP,
    MODEL,
    PROBE_ANNOTATION,
    PROVIDER,
    TEMPLATE,
    VERSION,
)
from switchyard.router.kube.config import ClusterAccess, load, login

log = logging.getLogger("switchyard.operator")

_operator: Operator | None = None
_tasks: list[asyncio.Task[None]] = []
_access: ClusterAccess | None = None


def configure(access: ClusterAccess) -> None:
    """Use these credentials (the command line found them) instead of looking again."""
    global _access
    _access = access


def access() -> ClusterAccess:
    global _access
    if _access is None:
        _access = load()
    return _access


def current() -> Operator:
    assert _operator is not None, "the operator has not started"
    return _operator


@kopf.on.login()
async def credentials(**_: Any) -> kopf.ConnectionInfo:
    """kopf asks again whenever the API server refuses what it holds or it expires:
    token files are read and exec credential plugins run afresh each time."""
    c = await login(access())
    return kopf.ConnectionInfo(
        server=c.server,
        ca_path=c.ca_path,
        ca_data=c.ca_data,
        insecure=c.insecure,
        username=c.username,
        password=c.password,
        token=c.token,
        certificate_path=c.certificate_path,
        certificate_data=c.certificate_data,
        private_key_path=c.private_key_path,
        private_key_data=c.private_key_data,
        default_namespace=c.namespace,
        expiration=c.expiration,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _operator
    # Progress and diff-bases go to annotations: status.kopf would be pruned by
    # the structural schemas, and status belongs to what Switchyard reports.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="kopf.switchyard.dev"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.switchyard.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    config = OperatorConfig.from_env()
    if config.watch_namespaces:
        # Serving named namespaces, kopf would list every namespace and watch the CRDs
        # (cluster-wide reads its Roles do not grant): it finds the resources once.
        settings.scanning.disabled = True
    _operator = Operator(config, access())
    await _operator.start()
    _tasks[:] = _operator.tasks


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if _operator is not None:
        await _operator.stop()
    for task in _tasks:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@kopf.on.event(GROUP, VERSION, PROVIDER.plural)
async def provider_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    op = current()
    op.state.record(PROVIDER.plural, type, body)
    if type != "DELETED":
        annotations = body.get("metadata", {}).get("annotations") or {}
        await op.provider_changed(body, annotations.get(PROBE_ANNOTATION))


@kopf.on.event(GROUP, VERSION, MODEL.plural)
def model_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    op = current()
    meta = body.get("metadata") or {}
    key = (meta.get("namespace", ""), meta.get("name", ""))
    old = op.state.models.get(key)
    op.state.record(MODEL.plural, type, body)
    spec = body.get("spec") or {}
    wanted = ((spec.get("providerRef") or {}).get("name"), spec.get("modelName"))
    before = (
        None
        if old is None
        else ((old.spec.get("providerRef") or {}).get("name"), old.spec.get("modelName"))
    )
    seen = (body.get("status") or {}).get("router")
    seen_before = None if old is None else old.status.get("router")
    if type != "DELETED" and wanted[0] and (wanted != before or seen != seen_before):
        # Whether its provider serves it is the probe's to say (with what the routers
        # saw of it), now rather than at the next interval.
        op.prober.probe_now((key[0], str(wanted[0])))


@kopf.on.event(GROUP, VERSION, TEMPLATE.plural)
def template_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    current().state.record(TEMPLATE.plural, type, body)


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices")
def endpoint_slice_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """Pods of a Service an LLMProvider's serviceRef names came or went: the table
    follows them (compiled after the debounce, within a second)."""
    current().state.record_slice(type, body)


@kopf.on.event("", "v1", "secrets")
def secret_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    op = current()
    if op.state.record_secret(type, body, API_KEY_LABEL):
        op.secret_changed(body)
