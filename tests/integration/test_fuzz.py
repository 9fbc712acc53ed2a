"""A schema-driven fuzzer against the router's OpenAPI document, every check on.

Schemathesis generates valid and invalid requests for every operation from
``/openapi.json`` and sends them over real HTTP to a router in front of the fake
providers. It fails on any 5xx, any status or content type the document does not
declare, a valid request refused, an invalid one accepted, an undeclared method
answered without ``Allow``, and a request served without its key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Factory
from tests.integration.conftest import MODELS, Fakes, five_providers
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, table

HERE = Path(__file__).parent
#: Fixed so a failure reproduces; set SWITCHYARD_FUZZ_SEED to explore other cases.
SEED = os.environ.get("SWITCHYARD_FUZZ_SEED", "20261128")
EXAMPLES = os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "40")


def fuzz_table(fakes: Fakes) -> dict[str, Any]:
    """One model on each provider type, with room for any ``max_tokens`` the schemas allow.

    A model's own output cap is the table's business, like whether a model exists: the
    document cannot know it, so the fuzzer gets models whose caps do not bite.
    """
    models = [
        model(name, prov, upstream, contextWindow=100_000_000, maxOutputTokens=1_000_000)
        for name, (prov, upstream) in MODELS.items()
    ]
    # Ollama takes images only as data, so an image given by URL is a 400 for a model
    # served by Ollama alone: what its provider can take is the table's business, which
    # no schema can say. As a table would, the Ollama model has a dearer second candidate
    # that takes URLs; everything else still reaches Ollama first.
    models.append(
        model(
            "ollama-llama",
            *MODELS["llama"],
            contextWindow=100_000_000,
            maxOutputTokens=1_000_000,
            inputPricePer1MTokens="9.00",
            outputPricePer1MTokens="9.00",
        )
    )
    # A body may carry fields the schema leaves open (they are forwarded as sent); on
    # the way to a provider of another protocol the table lets them be dropped.
    return table(five_providers(fakes), models, routing={"dropUnsupportedParams": True})


@pytest.fixture
def gateway(fakes: Fakes, router: Factory) -> RouterServer:
    return router(fuzz_table(fakes))


def test_the_fuzzer_finds_nothing(gateway: RouterServer, tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "st"
    proc = subprocess.run(
        [
            str(st),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{gateway.url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--max-examples",
            EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "2",
            "--request-timeout",
            "20",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    (tmp_path / "schemathesis.out").write_text(out)
    assert proc.returncode == 0, out[-20_000:]
    # It ran: every operation in the document was tested, but for the document's own
    # URL, which schemathesis leaves out.
    doc = httpx.get(f"{gateway.url}/openapi.json").json()
    operations = sum(len(methods) for methods in doc["paths"].values())
    assert f"Tested: {operations - 1}\n" in out, out[-5_000:]
    metrics = httpx.get(f"{gateway.admin}/metrics").text
    assert "switchyard_internal_errors_total 0.0" in metrics


@pytest.mark.parametrize(
    ("path", "allow"), [("/v1/models", "HEAD, GET"), ("/api/v1/llm/completion", "POST")]
)
def test_an_undeclared_method_is_405_naming_the_allowed_ones(
    gateway: RouterServer, path: str, allow: str
) -> None:
    r = httpx.request("TRACE", f"{gateway.url}{path}")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == set(allow.split(", "))
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_creating_a_provider_outside_a_cluster_is_405_not_a_server_error(
    gateway: RouterServer,
) -> None:
    r = httpx.post(
        f"{gateway.url}/api/v1/llm/providers",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"name": "x", "providerType": "openai"},
    )
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "GET"
    assert "routing-table file" in r.json()["error"]["message"]
    doc = httpx.get(f"{gateway.url}/openapi.json").json()
    assert "post" not in doc["paths"]["/api/v1/llm/providers"]
