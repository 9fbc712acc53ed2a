"""Where a provider may be reached: an LLMProvider's ``baseUrl`` is a tenant's, and must not
make the router a way to the cloud's metadata service or into the cluster; and what a
server that is not the provider's protocol answers never reaches a tenant."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from switchyard.router.contract import Provider
from switchyard.router.errors import UpstreamAddressRefused
from switchyard.router.providers import addresses
from switchyard.router.providers.base import HTTPAdapter
from switchyard.router.providers.registry import make_adapter
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


class _ClusterDNS(addresses.DefaultResolver):
    """A resolver that answers for the cluster's names with loopback, where the fakes are."""

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
        if host.endswith(".svc"):
            host = "127.0.0.1"
        return await super().resolve(host, port, family)


def test_a_cloud_type_may_use_a_cluster_name_once_its_network_is_allowed(
    fakes: Fakes, router: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OpenAI-compatible proxy in the cluster, reached by its Service's name: refused by
    name while nothing is allowed, served once its network is, and refused as it connects
    when the allowed network is not the one its name resolves to."""
    monkeypatch.setattr(addresses, "DefaultResolver", _ClusterDNS)
    url = fakes.openai.url.replace("127.0.0.1", "llm-proxy.egress.svc")
    refused = one(fakes, router, url, providerNetworks={"allowCIDRs": []})
    assert "cluster-internal name" in listing(refused)["p"]["refused"]
    elsewhere = one(fakes, router, url, providerNetworks={"allowCIDRs": ["10.0.0.0/8"]})
    assert listing(elsewhere)["p"]["refused"] is None
    r = ask(elsewhere)
    assert r.status_code == 503
    assert r.json()["error"]["attempts"][0]["error"] == "upstream_address_refused"
    assert fakes.openai.completions == 0
    allowed = one(fakes, router, url, providerNetworks={"allowCIDRs": ["127.0.0.0/8"]})
    assert ask(allowed).status_code == 200
    assert fakes.openai.completions == 1


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
    assert attempt["error"] == "upstream_address_refused"
    assert "127.0.0.1" not in r.text and "api.provider.example" not in r.text
    assert fakes.openai.completions == 0
    probe = httpx.post(f"{denied.url}/api/v1/llm/providers/p/health-check", headers=AUTH).json()
    assert probe["status"] == "unhealthy" and probe["addressRefused"] is True
    assert "127.0.0.1" not in str(probe)
    assert fakes.openai.requests == []
    # Allowed, the same name reaches the provider: the resolver is the one in use.
    allowed = one(fakes, router, url)
    assert ask(allowed).status_code == 200
    assert fakes.openai.completions == 1


class _Page(BaseHTTPRequestHandler):
    """A server that is not an LLM API: every request gets ``answer`` (status, content
    type, body, headers), and is recorded."""

    answer: tuple[int, str, bytes, dict[str, str]] = (404, "text/html", b"", {})
    seen: list[str]

    def do_GET(self) -> None:
        self._page()

    def do_POST(self) -> None:
        self._page()

    def _page(self) -> None:
        cookie = self.headers.get("Cookie")
        self.seen.append(f"{self.command} {self.path}" + (f" cookie={cookie}" if cookie else ""))
        status, kind, body, headers = self.answer
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


Serve = Callable[..., tuple[str, list[str]]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(status, content_type, body, headers, host=)`` → (its base URL, what it saw)."""
    servers: list[ThreadingHTTPServer] = []

    def start(
        status: int,
        kind: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> tuple[str, list[str]]:
        seen: list[str] = []
        handler = type("Handler", (_Page,), {"answer": (status, kind, body, headers or {})})
        handler.seen = seen
        server = ThreadingHTTPServer((host, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://{host}:{server.server_address[1]}/v1", seen

    yield start
    for server in servers:
        server.shutdown()


SECRET_PAGE = b"<html><body>internal admin console: db password hunter2</body></html>"
#: JSON, but not any LLM protocol's error: a Kubernetes API server's Status.
STATUS_JSON = (
    b'{"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,'
    b' "message": "etcd: hunter2 is the password", "reason": "InternalError"}'
)


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "body"),
    [
        ("vllm", 404, "text/html", SECRET_PAGE),
        ("ollama", 404, "text/html", SECRET_PAGE),
        ("openai", 404, "text/html", SECRET_PAGE),
        ("anthropic", 500, "application/json", STATUS_JSON),
        ("azure_openai", 500, "application/json", STATUS_JSON),
        ("vllm", 502, "application/json", b'{"error": "hunter2"}'),  # Ollama's, not OpenAI's
    ],
)
def test_a_body_that_is_not_the_protocols_error_never_reaches_a_tenant(
    fakes: Fakes,
    router: Factory,
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    status: int,
    content_type: str,
    body: bytes,
) -> None:
    url, seen = serve(status, content_type, body)
    if kind == "anthropic":
        url = url.removesuffix("/v1")
    gw = one(fakes, router, url, kind=kind)
    plain = ask(gw)
    streamed = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=10,
    )
    native = httpx.post(
        f"{gw.url}/api/v1/llm/completion",
        headers=AUTH,
        json={"taskType": "chat", "prompt": "hi", "model": "chat"},
        timeout=10,
    )
    probe = httpx.post(f"{gw.url}/api/v1/llm/providers/p/health-check", headers=AUTH)
    assert len(seen) >= 4  # it was asked, every time
    for r in (plain, streamed, native, probe):
        assert r.status_code in (200, 404, 502, 503), r.text
        assert "hunter2" not in r.text and "admin console" not in r.text, r.text
        assert "provider error" in r.text, r.text
    assert f"HTTP {status}" in probe.json()["message"]
    # The body goes to the router's log, for whoever runs it.
    assert "hunter2" in caplog.text


def test_a_redirect_is_never_followed(
    fakes: Fakes, router: Factory, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider the table allows answers with a redirect to an address it does not (a
    literal address, which no resolver sees): neither the request nor its key go there."""
    target, hit = serve(200, "application/json", b"{}")
    location = target.removesuffix("/v1") + "/latest/meta-data"
    url, seen = serve(307, "text/html", b"", {"Location": location}, host="127.0.0.2")
    gw = one(fakes, router, url, providerNetworks={"allowCIDRs": ["127.0.0.2/32"]})
    r = ask(gw)
    assert r.status_code == 503, r.text
    assert "redirect, not followed" in r.text
    probe = httpx.post(f"{gw.url}/api/v1/llm/providers/p/health-check", headers=AUTH).json()
    assert probe["status"] == "unhealthy" and "redirect, not followed" in probe["message"]
    assert len(seen) == 2 and hit == []
    assert location not in r.text and location in caplog.text


def test_every_socket_is_checked_even_for_a_literal_address(serve: Serve) -> None:
    """Were the check of the baseUrl's host ever passed by, the connector still refuses: its
    socket factory sees every address a connection is made to, literal or resolved."""
    url, seen = serve(200, "application/json", b'{"data": []}')
    spec = {"name": "p", "providerType": "openai", "baseUrl": url, "apiKey": {"env": "X"}}
    adapter = make_adapter(Provider.model_validate(spec), "k")
    assert isinstance(adapter, HTTPAdapter) and adapter.refused is not None
    adapter.refused = None  # as if the literal check had been passed by

    async def call() -> UpstreamAddressRefused:
        try:
            await adapter.list_models()
        except UpstreamAddressRefused as exc:
            return exc
        finally:
            await adapter.close()
        raise AssertionError("connected")

    refused = asyncio.run(call())
    assert refused.message == "provider 'p' may not be reached: its address is not allowed"
    assert seen == []


def test_a_page_answered_with_200_is_never_relayed(
    fakes: Fakes, router: Factory, serve: Serve
) -> None:
    """An in-cluster provider pointed at a service that is not an LLM API, which answers
    every POST with its page: a client of the provider's own protocol, whose answer is
    passed on unread, gets an error, not the page."""
    page = b"<html>\n\n<body>internal admin console: db password hunter2</body>\n\n</html>\n\n"
    url, seen = serve(200, "text/html", page)
    gw = router(
        table(
            [provider("p", "vllm", url)],
            [model("chat", "p", "m"), model("emb", "p", "e", modelType="embedding")],
        )
    )
    streamed = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=10,
    )
    embedded = httpx.post(
        f"{gw.url}/v1/embeddings", headers=AUTH, json={"model": "emb", "input": "hi"}, timeout=10
    )
    assert len(seen) == 2
    for r in (streamed, embedded):
        assert "hunter2" not in r.text and "admin console" not in r.text, r.text
        assert r.status_code == 503 or "error" in r.text, r.text


#: An OpenAI chat completion, as a vLLM server answers one.
ANSWER = (
    b'{"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",'
    b' "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},'
    b' "finish_reason": "stop"}],'
    b' "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}'
)


def test_a_providers_cookies_are_neither_kept_nor_sent_back(
    fakes: Fakes, router: Factory, serve: Serve
) -> None:
    """A cookie jar would keep whatever a provider's answers set, without bound (a name
    per answer), and send it back with every caller's later requests: one session
    across tenants. The provider is called by name: cookies from a bare address are
    never kept anyway."""
    url, seen = serve(200, "application/json", ANSWER, {"Set-Cookie": "session=first; Path=/"})
    gw = one(fakes, router, url.replace("127.0.0.1", "localhost"), kind="vllm")
    for _ in range(3):
        r = ask(gw)
        assert r.status_code == 200, r.text
    assert len(seen) == 3, seen
    assert not [s for s in seen if "cookie=" in s], seen
