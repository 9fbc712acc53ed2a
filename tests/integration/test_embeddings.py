"""``POST /v1/embeddings`` through the official openai SDK, to embedding models on each
provider type that has an embeddings API, accounted like completions."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Factory
from tests.fakes.content import fake_vector
from tests.integration.conftest import Fakes, five_models, five_providers
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, table

EMBEDDERS = {
    "embed-openai": ("openai", "text-embedding-3-small"),
    "embed-azure": ("azure", "embedding-deploy"),
    "embed-vllm": ("vllm", "BAAI/bge-small-en-v1.5"),
    "embed-ollama": ("ollama", "llama3.2"),
}


def embedding_models() -> list[dict[str, Any]]:
    return [
        model(name, prov, upstream, modelType="embedding", contextWindow=8192, maxOutputTokens=1)
        for name, (prov, upstream) in EMBEDDERS.items()
    ]


@pytest.fixture
def gw(fakes: Fakes, router: Factory) -> RouterServer:
    return router(table(five_providers(fakes), five_models() + embedding_models()))


def client(gw: RouterServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("name", list(EMBEDDERS))
def test_every_embedding_provider_answers_in_openais_shape(
    gw: RouterServer, fakes: Fakes, name: str
) -> None:
    texts = ["The cat sat", "on the mat today"]
    got = client(gw).embeddings.create(model=name, input=texts, dimensions=4)
    assert got.model == name
    assert [d.index for d in got.data] == [0, 1]
    assert got.data[0].embedding == pytest.approx(fake_vector("The cat sat", 4))
    assert got.usage.prompt_tokens == 7 and got.usage.total_tokens == 7
    fake = getattr(fakes, EMBEDDERS[name][0])
    sent = fake.requests[-1]
    if name == "embed-ollama":
        assert sent.body == {
            "model": "llama3.2",
            "input": texts,
            "truncate": False,
            "dimensions": 4,
        }
    else:
        assert sent.body["input"] == texts and sent.body["dimensions"] == 4


@pytest.mark.parametrize("name", ["embed-openai", "embed-ollama"])
def test_base64_is_what_the_sdk_decodes(gw: RouterServer, name: str) -> None:
    """The SDK asks for base64 by default and decodes it; Ollama's floats are packed."""
    raw = httpx.post(
        f"{gw.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": name, "input": "hello there", "encoding_format": "base64"},
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert floats == pytest.approx(fake_vector("hello there"), abs=1e-6)
    assert client(gw).embeddings.create(model=name, input="hello there").data[
        0
    ].embedding == pytest.approx(fake_vector("hello there"), abs=1e-6)


def test_an_embedding_is_a_usage_record_with_its_cost(gw: RouterServer) -> None:
    client(gw).embeddings.create(model="embed-openai", input="one two three")
    lines = httpx.get(f"{gw.admin}/metrics").text.splitlines()
    served = [
        line
        for line in lines
        if line.startswith("switchyard_requests_total{")
        and 'api="embeddings"' in line
        and 'status="200"' in line
    ]
    assert served and served[0].endswith(" 1.0")
    prompt = [
        line
        for line in lines
        if line.startswith("switchyard_tokens_total{")
        and 'model="embed-openai"' in line
        and 'direction="prompt"' in line
    ]
    assert prompt and prompt[0].endswith(" 3.0")


def test_token_ids_go_only_where_they_are_understood(gw: RouterServer, fakes: Fakes) -> None:
    got = client(gw).embeddings.create(model="embed-vllm", input=[[1, 2, 3]])
    assert len(got.data) == 1
    assert fakes.vllm.requests[-1].body["input"] == [[1, 2, 3]]
    with pytest.raises(openai.BadRequestError) as err:
        client(gw).embeddings.create(model="embed-ollama", input=[[1, 2, 3]])
    assert err.value.body["param"] == "input"  # type: ignore[index]


def test_chat_and_embedding_models_stay_apart(gw: RouterServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(gw).embeddings.create(model="gpt-4o-mini", input="hi")
    assert err.value.body["param"] == "model"  # type: ignore[index]
    assert "embedding" in err.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        client(gw).chat.completions.create(
            model="embed-openai", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.body["param"] == "model"  # type: ignore[index]


def test_failover_between_embedding_providers(fakes: Fakes, router: Factory) -> None:
    from tests.fakes import Fault

    gw = router(
        table(
            five_providers(fakes, openai={"priority": 1}, vllm={"priority": 2}),
            [
                model("embed", "openai", "text-embedding-3-small", modelType="embedding"),
                model("embed", "vllm", "BAAI/bge-small-en-v1.5", modelType="embedding"),
            ],
        )
    )
    fakes.openai.push(Fault.error(503))
    r = httpx.post(
        f"{gw.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "embed", "input": "x"},
    )
    assert r.status_code == 200 and r.headers["x-switchyard-provider"] == "vllm"


def test_an_embedding_model_on_anthropic_is_refused_by_name(fakes: Fakes, tmp_path: Any) -> None:
    from switchyard.router.errors import ConfigError
    from switchyard.router.table.loader import parse_document

    doc = table(
        five_providers(fakes),
        [model("embed", "anthropic", "claude-haiku-4-5", modelType="embedding")],
    )
    with pytest.raises(ConfigError) as err:
        parse_document(doc)
    assert err.value.path == "models[0].modelType"


@pytest.mark.parametrize("name", ["embed-openai", "embed-azure", "embed-vllm"])
def test_an_openai_protocol_answer_is_relayed_as_it_arrives(
    gw: RouterServer, fakes: Fakes, name: str
) -> None:
    """Not read whole and written again: the provider's bytes, its model renamed, as a
    chunked body; its usage recorded once the last byte has passed."""
    texts = [f"text number {i} " * 5 for i in range(256)]
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": name, "input": texts, "dimensions": 512},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in r.headers
        raw = r.read()
    answer = json.loads(raw)
    assert answer["model"] == name
    assert len(answer["data"]) == 256 and len(answer["data"][0]["embedding"]) == 512
    assert answer["data"][7]["embedding"] == pytest.approx(fake_vector(texts[7], 512))
    assert answer["usage"] == {"prompt_tokens": 256 * 15, "total_tokens": 256 * 15}
    # Byte for byte what the provider sent (aiohttp's JSON), but for the model's name.
    renamed = b'"model":' + json.dumps(name).encode()
    assert raw.count(renamed) == 1
    assert raw.replace(renamed, b'"model": "?"') == json.dumps({**answer, "model": "?"}).encode()
    lines = httpx.get(f"{gw.admin}/metrics").text.splitlines()
    prompt = [
        line
        for line in lines
        if line.startswith("switchyard_tokens_total{")
        and f'model="{name}"' in line
        and 'direction="prompt"' in line
    ]
    assert prompt and prompt[0].endswith(f" {256 * 15}.0")


def test_each_input_is_checked_against_the_window_not_the_batch(gw: RouterServer) -> None:
    # About 500 tokens each, 10,000 together: each fits the 8,192-token window, as on
    # OpenAI's API.
    texts = ["word " * 300 for _ in range(20)]
    got = client(gw).embeddings.create(model="embed-openai", input=texts)
    assert len(got.data) == 20
    with pytest.raises(openai.BadRequestError) as err:
        client(gw).embeddings.create(model="embed-openai", input=["short", "word " * 6000])
    assert err.value.body["param"] == "input[1]"  # type: ignore[index]
