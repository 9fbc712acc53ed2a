"""The routing table loads exactly as documented, and a bad one names the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from switchyard.router.errors import ConfigError
from switchyard.router.table.loader import load_bytes, load_file, parse_document

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
apiVersion: switchyard.dev/v1alpha1
kind: RoutingTable
providers:
  - name: local
    providerType: vllm            # OpenAI-compatible types: baseUrl as the openai SDK takes it
    baseUrl: http://127.0.0.1:8014/v1
    priority: 10
  - name: openai
    providerType: openai
    baseUrl: https://api.openai.com/v1
    apiKey: {env: OPENAI_API_KEY}
    priority: 20
    rateLimits: {requestsPerMinute: 500, tokensPerMinute: 100000}
models:
  - name: smollm2                 # the name clients ask for
    provider: local
    modelName: smollm2-135m       # the name the provider knows
    contextWindow: 4096
    maxOutputTokens: 1024
    inputPricePer1MTokens: "0"
    outputPricePer1MTokens: "0"
    bestFor: [documentation]
  - name: gpt-4o-mini
    provider: openai
    modelName: gpt-4o-mini
    contextWindow: 128000
    maxOutputTokens: 16384
    supportsFunctionCalling: true
    inputPricePer1MTokens: "0.15"
    outputPricePer1MTokens: "0.60"
    bestFor: [code_analysis, test_generation]
apiKeys:
  - name: dev
    sha256: 5e9c4f5e4b3a2d1c0f9e8d7c6b5a493827160f5e4d3c2b1a0f9e8d7c6b5a4938
    organization: default
    scopes: [completion, usage:read, settings:write]
"""


def test_the_minimal_table_loads_as_written() -> None:
    table, checksum = load_bytes(MINIMAL.encode())
    local, openai = table.providers
    assert (local.name, local.provider_type, local.url, local.priority) == (
        "local",
        "vllm",
        "http://127.0.0.1:8014/v1",
        10,
    )
    assert openai.api_key is not None and openai.api_key.env == "OPENAI_API_KEY"
    assert openai.rate_limits.requests_per_minute == 500
    assert openai.rate_limits.tokens_per_minute == 100000
    gpt = table.models[1]
    assert gpt.input_price_per_1m_tokens == "0.15"
    assert gpt.output_price_per_1m_tokens == "0.60"
    assert gpt.supports_function_calling and gpt.supports_streaming
    assert gpt.best_for == ["code_analysis", "test_generation"]
    assert table.api_keys[0].scopes == ["completion", "usage:read", "settings:write"]
    assert len(checksum) == 64


def test_the_commented_example_is_valid() -> None:
    table, _ = load_file(ROOT / "examples" / "routing-table.yaml")
    assert {p.provider_type for p in table.providers} == {
        "anthropic",
        "openai",
        "azure_openai",
        "vllm",
        "ollama",
    }


def _doc() -> dict:
    return yaml.safe_load(MINIMAL)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("providers", 0, "providerType"), "llama", "providers[0].providerType"),
        (("providers", 1, "priority"), -1, "providers[1].priority"),
        (("providers", 0, "baseUrl"), "not a url", "providers[0].baseUrl"),
        (("models", 1, "inputPricePer1MTokens"), "cheap", "models[1].inputPricePer1MTokens"),
        (("models", 1, "inputPricePer1MTokens"), 0.15, "models[1].inputPricePer1MTokens"),
        (("models", 0, "contextWindow"), 0, "models[0].contextWindow"),
        (("models", 0, "maxOutputTokens"), 99999, "models[0]"),
        (("models", 0, "provider"), "nobody", "models[0].provider"),
        (("models", 0, "bestFor"), ["a", "a"], "models[0]"),
        (("apiKeys", 0, "sha256"), "abc", "apiKeys[0].sha256"),
        (("apiKeys", 0, "scopes"), ["root"], "apiKeys[0].scopes[0]"),
        (("models", 0, "contxtWindow"), 5, "models[0].contxtWindow"),
        (("providers", 1, "apiKey"), {"env": "A", "file": "/b"}, "providers[1].apiKey"),
        (("kind",), "Table", "kind"),
        (("providers", 0, "baseUrl"), "http://169.254.169.254/latest?x=", "providers[0].baseUrl"),
        (("providers", 0, "baseUrl"), "http://llama:8000/v1#x", "providers[0].baseUrl"),
        (("providers", 0, "baseUrl"), "http://u:p@llama:8000/v1", "providers[0].baseUrl"),
        (
            ("routing",),
            {"providerNetworks": {"allowCIDRs": ["10.0.0.0/33"]}},
            "routing.providerNetworks.allowCIDRs[0]",
        ),
    ],
)
def test_a_bad_table_names_the_field(path: tuple, value: object, expected: str) -> None:
    doc = _doc()
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        parse_document(doc)
    assert err.value.path == expected, str(err.value)
    assert str(err.value).startswith(expected)


def test_cloud_providers_need_a_key_and_self_hosted_ones_a_base_url() -> None:
    doc = _doc()
    del doc["providers"][1]["apiKey"]
    with pytest.raises(ConfigError, match=r"providers\[1\].apiKey: .*needs an apiKey"):
        parse_document(doc)
    doc = _doc()
    del doc["providers"][0]["baseUrl"]
    with pytest.raises(ConfigError, match="baseUrl is required for providerType vllm"):
        parse_document(doc)


def test_yaml_errors_give_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        load_bytes(b"kind: RoutingTable\n  bad: [indent\n")


def test_template_variables_must_match_placeholders() -> None:
    doc = _doc()
    doc["templates"] = [{"name": "t", "template": "Hi {{name}} {{other}}", "variables": ["name"]}]
    with pytest.raises(ConfigError, match="undeclared variables: other"):
        parse_document(doc)
    doc["templates"] = [{"name": "t", "template": "Hi {{name}}", "variables": ["name", "x"]}]
    with pytest.raises(ConfigError, match="never used: x"):
        parse_document(doc)
