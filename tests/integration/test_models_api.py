"""``GET /v1/models`` and ``GET /v1/models/{id}`` through both official SDKs."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.integration.conftest import MODELS
from tests.support.servers import RouterServer
from tests.support.tables import KEY


def test_the_openai_sdk_lists_and_retrieves(gateway: RouterServer) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
    listed = client.models.list()
    assert sorted(m.id for m in listed) == sorted(MODELS)
    model = client.models.retrieve("claude")
    assert model.id == "claude" and model.object == "model" and model.owned_by == "anthropic"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("meta-llama/not-here")


def test_the_anthropic_sdk_lists_and_retrieves(gateway: RouterServer) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    page = client.models.list()
    assert sorted(m.id for m in page.data) == sorted(MODELS)
    assert not page.has_more
    model = client.models.retrieve("llama")
    assert model.type == "model" and model.id == "llama" and model.display_name
    assert model.created_at.year >= 2026
    with pytest.raises(anthropic.NotFoundError) as err:
        client.models.retrieve("nope")
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
