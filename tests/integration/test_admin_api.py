"""Providers, health checks, templates, metrics, OpenAPI, and tenancy."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import Factory
from tests.fakes import Fault
from tests.integration.conftest import KEYS, Fakes, five_models, five_providers
from tests.support.servers import RouterServer
from tests.support.tables import KEY, OTHER_ORG_KEY, READONLY_KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER = {"Authorization": f"Bearer {OTHER_ORG_KEY}"}


@pytest.fixture
def gw(fakes: Fakes, router: Factory) -> RouterServer:
    providers = five_providers(fakes)
    providers.append(provider("other-vllm", "vllm", fakes.vllm.url, organization="other"))
    models = five_models()
    models.append(
        model("other-llama", "other-vllm", "meta-llama/Llama-3.1-8B-Instruct", organization="other")
    )
    templates = [
        {
            "name": "greet",
            "template": "Hello {{name}}, welcome to {{place}}.",
            "description": "A greeting",
            "taskType": "general",
            "modelOverrides": [
                {"model": "claude", "template": "<greet>{{name}} @ {{place}}</greet>"}
            ],
        },
        {"name": "secret-plan", "organization": "other", "template": "{{x}}"},
    ]
    return router(table(providers, models, templates=templates))


def test_providers_are_listed_without_secrets(gw: RouterServer) -> None:
    r = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH)
    assert r.status_code == 200
    providers = {p["name"]: p for p in r.json()["providers"]}
    assert set(providers) == {"openai", "azure", "vllm", "anthropic", "ollama"}
    assert providers["anthropic"]["providerType"] == "anthropic"
    assert providers["openai"]["models"] == ["gpt-4o-mini"]
    assert providers["vllm"]["healthStatus"] == "unknown"
    for secret in KEYS.values():
        assert secret not in r.text


@pytest.mark.parametrize("name", ["openai", "azure", "vllm", "anthropic", "ollama"])
def test_health_check_probes_each_provider(gw: RouterServer, name: str) -> None:
    r = httpx.post(f"{gw.url}/api/v1/llm/providers/{name}/health-check", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "healthy", body
    assert body["latencyMs"] >= 0
    listed = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
    assert {p["name"]: p for p in listed}[name]["healthStatus"] == "healthy"


def test_health_check_reports_failure_and_needs_scope(
    gw: RouterServer, fakes: Fakes, router: Factory
) -> None:
    # A provider whose key is wrong answers 401 to the probe.
    bad = router(
        table(five_providers(fakes, openai={"apiKey": {"env": "SY_TEST_AZURE_KEY"}}), five_models())
    )
    r = httpx.post(f"{bad.url}/api/v1/llm/providers/openai/health-check", headers=AUTH)
    body = r.json()
    assert body["status"] == "unhealthy" and "401" in body["message"]
    assert KEYS["SY_TEST_AZURE_KEY"] not in r.text
    r = httpx.post(f"{gw.url}/api/v1/llm/providers/nope/health-check", headers=AUTH)
    assert r.status_code == 404
    r = httpx.post(
        f"{gw.url}/api/v1/llm/providers/openai/health-check",
        headers={"Authorization": f"Bearer {READONLY_KEY}"},
    )
    assert r.status_code == 403


def test_a_missing_key_makes_the_provider_unusable_not_the_router(
    fakes: Fakes, router: Factory
) -> None:
    gw = router(
        table(five_providers(fakes, openai={"apiKey": {"env": "SY_TEST_UNSET"}}), five_models())
    )
    providers = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
    problem = {p["name"]: p for p in providers}["openai"]["apiKeyProblem"]
    assert problem == "environment variable SY_TEST_UNSET is not set"
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 503
    assert "no usable API key" in r.json()["error"]["message"]
    assert fakes.openai.completions == 0


def test_templates_list_and_render(gw: RouterServer) -> None:
    r = httpx.get(f"{gw.url}/api/v1/llm/templates", headers=AUTH)
    templates = r.json()["templates"]
    assert [t["name"] for t in templates] == ["greet"]
    assert templates[0]["variables"] == ["name", "place"]
    r = httpx.post(
        f"{gw.url}/api/v1/llm/templates/render",
        headers=AUTH,
        json={"template": "greet", "variables": {"name": "$1 {x}", "place": r"\g<0>"}},
    )
    assert r.json()["rendered"] == r"Hello $1 {x}, welcome to \g<0>."
    r = httpx.post(
        f"{gw.url}/api/v1/llm/templates/render",
        headers=AUTH,
        json={"template": "greet", "model": "claude", "variables": {"name": "A", "place": "B"}},
    )
    assert r.json()["rendered"] == "<greet>A @ B</greet>" and r.json()["modelOverride"] is True
    r = httpx.post(
        f"{gw.url}/api/v1/llm/templates/render",
        headers=AUTH,
        json={"template": "greet", "variables": {"name": "A"}},
    )
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "variables.place"
    assert "place" in r.json()["error"]["message"]


def test_organizations_see_only_their_own(gw: RouterServer, fakes: Fakes) -> None:
    other = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=OTHER_ORG_KEY, max_retries=0)
    assert [m.id for m in other.models.list()] == ["other-llama"]
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert fakes.openai.completions == 0
    providers = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=OTHER).json()["providers"]
    assert [p["name"] for p in providers] == ["other-vllm"]
    assert [
        t["name"]
        for t in httpx.get(f"{gw.url}/api/v1/llm/templates", headers=OTHER).json()["templates"]
    ] == ["secret-plan"]
    r = httpx.post(
        f"{gw.url}/api/v1/llm/templates/render",
        headers=AUTH,
        json={"template": "secret-plan", "variables": {"x": "1"}},
    )
    assert r.status_code == 404
    r = httpx.post(f"{gw.url}/api/v1/llm/providers/other-vllm/health-check", headers=AUTH)
    assert r.status_code == 404


def test_metrics(gw: RouterServer, fakes: Fakes) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "a b"}])
    list(
        client.chat.completions.create(
            model="llama", stream=True, messages=[{"role": "user", "content": "a"}]
        )
    )
    fakes.openai.push(Fault.error(500))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
        )
    text = httpx.get(f"{gw.admin}/metrics").text
    assert (
        'switchyard_requests_total{api="openai",model="claude",organization="default",'
        'provider="anthropic",status="200"} 1.0' in text
    )
    assert (
        'switchyard_time_to_first_token_seconds_count{model="llama",organization="default",'
        'provider="vllm"} 1.0' in text
    )
    assert (
        'switchyard_tokens_total{direction="prompt",model="claude",organization="default",'
        'provider="anthropic"} 6.0' in text
    )
    assert (
        'switchyard_cost_usd_total{model="claude",organization="default",provider="anthropic"}'
        in text
    )
    assert (
        'switchyard_upstream_errors_total{error="upstream_status_error",organization="default",'
        'provider="openai"} 1.0' in text
    )
    assert (
        'switchyard_requests_total{api="openai",model="gpt-4o-mini",organization="default",'
        'provider="openai",status="503"} 1.0' in text
    )
    assert "switchyard_request_duration_seconds_bucket" in text
    for secret in [*KEYS.values(), KEY]:
        assert secret not in text


def test_two_organizations_providers_of_one_name_keep_their_own_series(
    fakes: Fakes, router: Factory
) -> None:
    """Both organizations call a provider "vllm"; one of them fails, the other does not."""
    gw = router(
        table(
            [
                provider("vllm", "vllm", fakes.vllm.url),
                provider("vllm", "vllm", "http://127.0.0.1:9", organization="other"),
            ],
            [
                model("llama", "vllm", "meta-llama/Llama-3.1-8B-Instruct"),
                model("llama", "vllm", "meta-llama/Llama-3.1-8B-Instruct", organization="other"),
            ],
        )
    )
    ours = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)
    theirs = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=OTHER_ORG_KEY, max_retries=0)
    ours.chat.completions.create(model="llama", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.APIStatusError):
        theirs.chat.completions.create(model="llama", messages=[{"role": "user", "content": "a"}])
    text = httpx.get(f"{gw.admin}/metrics").text
    assert (
        'switchyard_requests_total{api="openai",model="llama",organization="default",'
        'provider="vllm",status="200"} 1.0' in text
    )
    assert (
        'switchyard_requests_total{api="openai",model="llama",organization="other",'
        'provider="vllm",status="503"} 1.0' in text
    )
    assert (
        'switchyard_upstream_errors_total{error="upstream_connect_error",organization="other",'
        'provider="vllm"} 1.0' in text
    )
    assert 'upstream_errors_total{error="upstream_connect_error",organization="default"' not in text


def test_openapi_document(gw: RouterServer) -> None:
    doc = httpx.get(f"{gw.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in [
        "/api/v1/llm/completion",
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/models",
        "/api/v1/llm/providers",
        "/api/v1/llm/providers/{name}/health-check",
        "/api/v1/llm/templates",
        "/api/v1/llm/templates/render",
    ]:
        assert path in doc["paths"], path
    # The admin port's paths are not the API's.
    assert not {"/healthz", "/readyz", "/metrics"} & set(doc["paths"])
    body = doc["components"]["schemas"]["CompletionBody"]
    max_tokens = body["properties"]["maxTokens"]["anyOf"][0]
    assert (max_tokens["minimum"], max_tokens["maximum"]) == (1, 8192)
    assert "taskType" in body["required"]


def test_health_and_readiness(gw: RouterServer) -> None:
    assert httpx.get(f"{gw.admin}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.admin}/readyz").json()
    assert ready["status"] == "ready" and len(ready["table"]["checksum"]) == 64


def test_metrics_are_on_the_admin_port_only(gw: RouterServer) -> None:
    """/metrics names every organization's providers and spend: whoever reaches the API
    may not read it; the API is not served on the admin port either."""
    assert "switchyard_requests_total" in httpx.get(f"{gw.admin}/metrics").text
    for path in ("/metrics", "/healthz", "/readyz"):
        r = httpx.get(f"{gw.url}{path}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        assert "switchyard_" not in r.text
    r = httpx.get(f"{gw.admin}/v1/models", headers=AUTH)
    assert r.status_code == 404
    assert httpx.get(f"{gw.url}/v1/models", headers=AUTH).status_code == 200


def test_the_probe_checks_every_declared_model(fakes: Fakes, router: Factory) -> None:
    """A provider whose second model is missing is not reported healthy."""
    gw = router(
        table(
            five_providers(fakes),
            [
                model("chat", "openai", "gpt-4o-mini"),
                model("gone", "openai", "gpt-nonexistent"),
                model("local", "ollama", "llama3.2"),  # served as llama3.2:latest
            ],
        )
    )
    r = httpx.post(f"{gw.url}/api/v1/llm/providers/openai/health-check", headers=AUTH).json()
    assert r["status"] == "degraded" and r["missingModels"] == ["gpt-nonexistent"]
    assert "gpt-nonexistent" in r["message"]
    r = httpx.post(f"{gw.url}/api/v1/llm/providers/ollama/health-check", headers=AUTH).json()
    assert r["status"] == "healthy" and r["missingModels"] == []


def test_a_successful_probe_closes_the_breaker_and_the_listing_is_live(
    fakes: Fakes, router: Factory
) -> None:
    gw = router(
        table(
            five_providers(fakes),
            [model("chat", "openai", "gpt-4o-mini")],
            routing={"maxAttempts": 1, "breaker": {"failureThreshold": 1, "cooldownSeconds": 300}},
        )
    )
    probe = f"{gw.url}/api/v1/llm/providers/openai/health-check"
    assert httpx.post(probe, headers=AUTH).json()["status"] == "healthy"
    fakes.openai.push(Fault.error(500))
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, json=body).status_code == 503

    def listed() -> dict[str, object]:
        providers = httpx.get(f"{gw.url}/api/v1/llm/providers", headers=AUTH).json()["providers"]
        return {p["name"]: p for p in providers}["openai"]  # type: ignore[no-any-return]

    # The last probe said healthy; the live state says otherwise.
    assert listed()["circuitBreaker"] == "open" and listed()["healthStatus"] == "unhealthy"
    assert listed()["lastHealthCheck"]["status"] == "healthy"  # type: ignore[index]
    assert httpx.post(probe, headers=AUTH).json()["status"] == "healthy"
    assert listed()["circuitBreaker"] == "closed" and listed()["healthStatus"] == "healthy"
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 200  # no need to wait out the 300 s cool-down
