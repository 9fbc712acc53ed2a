"""Kubernetes access as the router and the operator use it, against an API server on
loopback that checks bearer tokens: exec credential plugins, rotated token files, kopf's
plain credentials, and following an object through 410 Gone, deletions and refusals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from switchyard.router.kube.client import KubeClient
from switchyard.router.kube.config import load, login
from switchyard.router.kube.follow import follow
from switchyard.router.kube.resources import CONFIGMAPS

PLUGIN = """
import json, sys
from pathlib import Path
counter = Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
print(json.dumps({
    "apiVersion": sys.argv[2],
    "kind": "ExecCredential",
    "status": {"token": f"exec-{n}", "expirationTimestamp": "2030-01-02T03:04:05Z"},
}))
"""


@dataclass
class FakeAPI:
    """ConfigMaps in one namespace, list and watch, behind bearer tokens."""

    accepted: set[str]
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 10
    seen_tokens: list[str] = field(default_factory=list)
    lists: int = 0
    #: What the next watches do: "410" (an ERROR event), or events to send, then hang.
    watch_script: list[Any] = field(default_factory=list)

    def authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen_tokens.append(token)
        return token in self.accepted

    async def configmaps(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request):
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
                status=401,
            )
        name = request.query.get("fieldSelector", "").removeprefix("metadata.name=")
        if request.query.get("watch") != "true":
            self.lists += 1
            items = [o for n, o in self.objects.items() if not name or n == name]
            return web.json_response(
                {
                    "kind": "ConfigMapList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.version)},
                    "items": items,
                }
            )
        resp = web.StreamResponse()
        await resp.prepare(request)
        step = self.watch_script.pop(0) if self.watch_script else []
        if step == "410":
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": "too old resource version",
                "reason": "Expired",
                "code": 410,
            }
            await resp.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            return resp
        for kind, obj in step:
            await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
        await asyncio.sleep(3600)
        return resp


def configmap(name: str, value: str, version: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(version)},
        "data": {"value": value},
    }


async def serve(api: FakeAPI) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps", api.configmaps)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def write_kubeconfig(path: Path, server: str, user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "t",
                "clusters": [{"name": "t", "cluster": {"server": server}}],
                "users": [{"name": "t", "user": user}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
            }
        )
    )
    return path


def exec_user(tmp_path: Path, api_version: str) -> dict[str, Any]:
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    return {
        "exec": {
            "apiVersion": api_version,
            "command": sys.executable,
            "args": [str(script), str(tmp_path / "count"), api_version],
        }
    }


def run(scenario: Callable[[FakeAPI, str], Any], api: FakeAPI) -> Any:
    async def main() -> Any:
        runner, url = await serve(api)
        try:
            return await asyncio.wait_for(scenario(api, url), 30)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


@pytest.mark.parametrize(
    "api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"]
)
def test_exec_plugins_log_in_and_log_in_again_when_refused(
    tmp_path: Path, api_version: str
) -> None:
    api = FakeAPI(accepted={"exec-1"}, objects={"a": configmap("a", "1", 10)})

    async def scenario(api: FakeAPI, url: str) -> None:
        client = KubeClient(
            load(str(write_kubeconfig(tmp_path / "kc", url, exec_user(tmp_path, api_version))))
        )
        try:
            items, version = await client.list(CONFIGMAPS, "ns")
            assert [i["metadata"]["name"] for i in items] == ["a"] and version == "10"
            api.accepted = {"exec-2"}  # the first token expired
            items, _ = await client.list(CONFIGMAPS, "ns")
            assert len(items) == 1
        finally:
            await client.close()

    run(scenario, api)
    assert api.seen_tokens == ["exec-1", "exec-1", "exec-2"]


def test_kopf_gets_the_plugins_token_and_its_expiry(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kc",
        "https://10.0.0.1:6443",
        exec_user(tmp_path, "client.authentication.k8s.io/v1"),
    )
    first = asyncio.run(login(load(str(path))))
    again = asyncio.run(login(load(str(path))))
    assert (first.token, again.token) == ("exec-1", "exec-2")
    assert first.server == "https://10.0.0.1:6443"
    assert first.expiration is not None and first.expiration.year == 2030


def test_a_failing_plugin_is_a_clear_error(tmp_path: Path) -> None:
    from switchyard.router.kube.errors import KubeConfigError

    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "no-such-plugin",
            "installHint": "install no-such-plugin",
        }
    }
    path = write_kubeconfig(tmp_path / "kc", "https://10.0.0.1:6443", user)
    with pytest.raises(KubeConfigError, match=r"no-such-plugin.*install no-such-plugin"):
        asyncio.run(login(load(str(path))))


def test_a_rotated_token_file_is_read_again(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old\n")
    api = FakeAPI(accepted={"old"}, objects={"a": configmap("a", "1", 10)})

    async def scenario(api: FakeAPI, url: str) -> None:
        client = KubeClient(
            load(str(write_kubeconfig(tmp_path / "kc", url, {"tokenFile": "token"})))
        )
        try:
            await client.list(CONFIGMAPS, "ns")
            token.write_text("new\n")  # the kubelet rotated it
            api.accepted = {"new"}
            await client.list(CONFIGMAPS, "ns")
            credentials = await login(client.access)
            assert credentials.token == "new"
        finally:
            await client.close()

    run(scenario, api)
    assert api.seen_tokens == ["old", "old", "new"]


def test_following_survives_410_gone_and_sees_deletion(tmp_path: Path) -> None:
    api = FakeAPI(accepted={"t"}, objects={"table": configmap("table", "1", 10)})
    api.watch_script = [
        "410",  # the first watch is too late: list again
        [("MODIFIED", configmap("table", "2", 12)), ("DELETED", configmap("table", "2", 13))],
    ]

    async def scenario(api: FakeAPI, url: str) -> list[str | None]:
        client = KubeClient(load(str(write_kubeconfig(tmp_path / "kc", url, {"token": "t"}))))
        seen: list[str | None] = []
        stop = asyncio.Event()

        async def changed(obj: dict[str, Any] | None) -> None:
            seen.append(None if obj is None else obj["data"]["value"])
            if obj is None:
                stop.set()

        try:
            await asyncio.wait_for(follow(client, CONFIGMAPS, "ns", "table", changed, stop), 10)
        finally:
            await client.close()
        return seen

    seen = run(scenario, api)
    assert seen == ["1", "1", "2", None]
    assert api.lists == 2


def test_a_refused_credential_is_logged_as_an_error_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeAPI(accepted=set(), objects={"table": configmap("table", "1", 10)})

    async def scenario(api: FakeAPI, url: str) -> list[str | None]:
        client = KubeClient(load(str(write_kubeconfig(tmp_path / "kc", url, {"token": "t"}))))
        seen: list[str | None] = []
        stop = asyncio.Event()

        async def changed(obj: dict[str, Any] | None) -> None:
            seen.append(None if obj is None else obj["data"]["value"])
            stop.set()

        async def fix_rbac_later() -> None:
            await asyncio.sleep(0.3)
            api.accepted = {"t"}

        fixer = asyncio.create_task(fix_rbac_later())
        following = asyncio.create_task(
            follow(client, CONFIGMAPS, "ns", "table", changed, stop, max_delay=0.2)
        )
        try:
            await stop.wait()  # then it watches until cancelled, as its owners do
        finally:
            following.cancel()
            await fixer
            await client.close()
        return seen

    with caplog.at_level(logging.WARNING, logger="switchyard.kube"):
        seen = run(scenario, api)
    assert seen == ["1"]
    refusals = [r for r in caplog.records if "401" in r.getMessage()]
    assert refusals and all(r.levelno == logging.ERROR for r in refusals)
