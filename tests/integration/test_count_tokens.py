"""``POST /v1/messages/count_tokens`` through the anthropic SDK: counted by an Anthropic
provider of the model, estimated (and labelled so) for the others."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.fakes.content import prompt_tokens
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY

MESSAGES = [{"role": "user", "content": "How many tokens is this prompt, roughly?"}]


def client(gw: RouterServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)


def test_an_anthropic_model_is_counted_by_its_provider(gateway: RouterServer, fakes: Fakes) -> None:
    raw = client(gateway).messages.with_raw_response.count_tokens(
        model="claude",
        system="Be brief.",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    counted = raw.parse()
    # The fake counts as its completions report usage.
    assert counted.input_tokens == prompt_tokens(MESSAGES, "Be brief.")
    assert raw.headers["x-switchyard-token-count"] == "exact"
    assert raw.headers["x-switchyard-provider"] == "anthropic"
    asked = fakes.anthropic.requests[-1]
    assert asked.path == "/v1/messages/count_tokens"
    assert asked.body["model"] == "claude-haiku-4-5" and "max_tokens" not in asked.body
    assert asked.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert fakes.anthropic.completions == 0  # counting is not a completion


def test_other_models_are_estimated_and_say_so(gateway: RouterServer, fakes: Fakes) -> None:
    raw = client(gateway).messages.with_raw_response.count_tokens(
        model="llama",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.parse().input_tokens > 0
    assert raw.headers["x-switchyard-token-count"] == "estimated"
    assert fakes.vllm.completions == 0


def test_an_unknown_model_is_a_404_in_anthropics_shape(gateway: RouterServer) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client(gateway).messages.count_tokens(model="nope", messages=MESSAGES)  # type: ignore[arg-type]


def test_no_key_no_count(gateway: RouterServer) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/messages/count_tokens", json={"model": "claude", "messages": MESSAGES}
    )
    assert r.status_code == 401
    assert r.json()["type"] == "error"
