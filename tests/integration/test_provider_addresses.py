"""Where a provider may be reached: an LLMProvider's ``baseUrl`` is a tenant's, and must not
make the router a way to the cloud's metadata service or into the cluster; and what a
server that is not the provider's protocol answers never reaches a tenant."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from switchyard.router.providers import addresses
from tests.conftest import Factory
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}


KEY_ENV = {
    "openai": "SY_TEST_OPENAI_KEY",
    "azure_openai": "SY_TEST_AZURE_KEY",
    "anthropic": "SY_TEST_ANTHROPIC_KEY",
}


def one(
    fakes: Fakes, router: Factory, url: str, kind: str = "openai", **routing: Any
) -> RouterServer:
    doc = table(
        [provider("p", kind, url, key_env=KEY_ENV.get(kind))],
        [model("chat", "p", "gpt-4o-mini")],
        routing=routing,
    )
    return router(doc)


def check(tmp_path: Path, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``switchyard check`` on a table."""
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "check", "--config", str(path)],
        capture_output=True,
        text=True,
    )


def ask(gw: RouterServer) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )


def listing(gw: RouterServer) -> dict[str, Any]:
    providers = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
    return {p["name"]: p for p in providers}


def test_a_cloud_type_may_not_reach_loopback_unless_the_table_allows_it(
    fakes: Fakes, router: Factory
) -> None:
    denied = one(fakes, router, fakes.openai.url, providerNetworks={"allowCIDRs": []})
    r = ask(denied)
    assert r.status_code == 503
    assert fakes.openai.completions == 0
    p = listing(denied)["p"]
    assert p["healthStatus"] == "unhealthy"
    assert "private, loopback or cluster-internal" in p["refused"]
    probe = httpx.post(f"{denied.url}/api/v1/llm/providers/p/health-check", headers=AUTH)
    assert probe.json()["status"] == "unhealthy" and "refused" in probe.json()["message"]
    assert fakes.openai.requests == []  # not even probed
    # The same table allowing loopback serves.
    allowed = one(fakes, router, fakes.openai.url)
    assert ask(allowed).status_code == 200


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/v1", "http://[fe80::1]/v1", "http://metadata.google.internal/v1"],
)
def test_metadata_addresses_are_refused_for_every_type(
    fakes: Fakes, router: Factory, url: str
) -> None:
    gw = one(fakes, router, url, kind="vllm")
    assert ask(gw).status_code == 503
    assert "metadata" in listing(gw)["p"]["refused"]


def test_no_allowance_opens_a_metadata_address(
    fakes: Fakes, router: Factory, tmp_path: Path
) -> None:
    """``allowCIDRs`` opens private networks to the cloud types; the metadata service stays
    closed to every type even when the allowance covers everything."""
    everything = {"allowCIDRs": ["0.0.0.0/0", "::/0"]}
    for kind, url in (
        ("vllm", "http://169.254.169.254/latest/meta-data"),
        ("openai", "http://[fd00:ec2::254]/v1"),
        ("ollama", "http://[::ffff:169.254.169.254]"),
    ):
        gw = one(fakes, router, url, kind=kind, providerNetworks=everything)
        assert ask(gw).status_code == 503
        assert "metadata" in listing(gw)["p"]["refused"], url
    doc = table(
        [provider("p", "vllm", "http://169.254.169.254/v1")],
        [model("chat", "p", "m")],
        routing={"providerNetworks": everything},
    )
    result = check(tmp_path, doc)
    assert result.returncode == 1, result.stdout
    assert "refused: providers[0] (p): baseUrl is a link-local or cloud metadata" in result.stderr


def test_a_cluster_name_is_refused_for_a_cloud_type_and_allowed_in_cluster(
    fakes: Fakes, router: Factory
) -> None:
    none = {"allowCIDRs": []}
    cloud = one(fakes, router, "https://kubernetes.default.svc/v1", providerNetworks=none)
    assert "cluster-internal name" in listing(cloud)["p"]["refused"]
    single_label = one(fakes, router, "http://switchyard-postgresql:5432", providerNetworks=none)
    assert "cluster-internal name" in listing(single_label)["p"]["refused"]
    in_cluster = one(
        fakes, router, "http://vllm.team-a.svc:8000/v1", kind="vllm", providerNetworks=none
    )
    assert listing(in_cluster)["p"]["refused"] is None


def test_a_base_url_with_a_query_or_credentials_is_refused_by_the_table(tmp_path: Path) -> None:
    for url, what in (
        ("http://169.254.169.254/latest?x=", "query string"),
        ("http://llama:8000/v1?", "query string"),
        ("http://user:pw@llama:8000/v1", "credentials"),
        ("http://llama:8000/v1#frag", "fragment"),
    ):
        result = check(tmp_path, table([provider("p", "vllm", url)], [model("chat", "p", "m")]))
        assert result.returncode == 2, result.stdout
        assert "providers[0].baseUrl" in result.stderr and what in result.stderr


class _Rebound(addresses.DefaultResolver):
    """A resolver that answers for a public-looking name with loopback: DNS rebinding."""

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
        if host == "api.provider.example":
            host = "127.0.0.1"
        return await super().resolve(host, port, family)


def test_a_name_that_resolves_to_a_refused_address_is_refused_at_connect_time(
    fakes: Fakes, router: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(addresses, "DefaultResolver", _Rebound)
    url = fakes.openai.url.replace("127.0.0.1", "api.provider.example")
    denied = one(fakes, router, url, providerNetworks={"allowCIDRs": []})
    assert listing(denied)["p"]["refused"] is None  # nothing in the name itself
    r = ask(denied)
    assert r.status_code == 503
    attempt = r.json()["error"]["attempts"][0]
    assert "address is not allowed" in attempt["message"]
    assert "127.0.0.1" not in r.text and "api.provider.example" not in r.text
    assert fakes.openai.completions == 0
    # Allowed, the same name reaches the provider: the resolver is the one in use.
    allowed = one(fakes, router, url)
    assert ask(allowed).status_code == 200
    assert fakes.openai.completions == 1


class _NotAnLLM(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._page()

    def do_POST(self) -> None:
        self._page()

    def _page(self) -> None:
        body = b"<html><body>internal admin console: db password hunter2</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def not_an_llm() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotAnLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize("kind", ["vllm", "ollama"])
def test_a_body_that_is_not_the_protocols_error_never_reaches_a_tenant(
    fakes: Fakes, router: Factory, not_an_llm: str, kind: str
) -> None:
    gw = one(fakes, router, not_an_llm, kind=kind)
    r = ask(gw)
    assert r.status_code in (404, 502, 503)
    assert "hunter2" not in r.text and "admin console" not in r.text
    assert "provider error" in r.text
    probe = httpx.post(f"{gw.url}/api/v1/llm/providers/p/health-check", headers=AUTH).json()
    assert "hunter2" not in str(probe) and "provider error" in probe["message"]
