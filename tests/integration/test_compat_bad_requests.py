"""Bad requests on the OpenAI- and Anthropic-compatible surfaces: 4xx in each API's shape."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY

AUTH = {"Authorization": f"Bearer {KEY}"}
MSG = [{"role": "user", "content": "hi"}]

OPENAI_BAD: list[tuple[dict[str, Any], str]] = [
    ({"messages": MSG}, "model"),
    ({"model": "llama"}, "messages"),
    ({"model": "llama", "messages": []}, "messages"),
    ({"model": "llama", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "llama", "messages": MSG, "temperature": 3}, "temperature"),
    ({"model": "llama", "messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"model": "llama", "messages": MSG, "n": 2}, "n"),
    ({"model": "llama", "messages": MSG, "stream": "yes"}, "stream"),
    (
        {"model": "llama", "messages": [{"role": "system", "content": "only a system prompt"}]},
        "messages",
    ),
    (
        {
            "model": "llama",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}
                    ],
                }
            ],
        },
        "messages[0].content[0].type",
    ),
    (
        {
            "model": "llama",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                }
            ],
        },
        "messages[0].content[0].image_url.url",
    ),
    ({"model": "llama", "messages": MSG, "tool_choice": "sometimes"}, "tool_choice"),
    (
        {"model": "llama", "messages": MSG, "tool_choice": {"type": "function", "function": "f"}},
        "tool_choice.function",
    ),
]


@pytest.mark.parametrize(("body", "field"), OPENAI_BAD)
def test_openai_surface(
    gateway: RouterServer, fakes: Fakes, body: dict[str, Any], field: str
) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["field"] == field
    assert fakes.vllm.completions == 0


def test_openai_sdk_raises_bad_request_with_the_message(gateway: RouterServer) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="llama", messages=MSG, temperature=5)  # type: ignore[arg-type]


ANTHROPIC_BAD: list[tuple[dict[str, Any], str]] = [
    ({"model": "llama", "messages": MSG}, "max_tokens"),
    ({"model": "llama", "max_tokens": 5, "messages": MSG, "temperature": 1.5}, "temperature"),
    (
        {"model": "llama", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
        "messages[0].role",
    ),
    (
        {
            "model": "llama",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "AA==",
                            },
                        }
                    ],
                }
            ],
        },
        "messages[0].content[0].type",
    ),
    (
        {
            "model": "llama",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/bmp", "data": "AA=="},
                        }
                    ],
                }
            ],
        },
        "messages[0].content[0].source.media_type",
    ),
    (
        {"model": "llama", "max_tokens": 5, "messages": MSG, "tool_choice": {"type": "tool"}},
        "tool_choice.name",
    ),
]


@pytest.mark.parametrize(("body", "field"), ANTHROPIC_BAD)
def test_anthropic_surface(gateway: RouterServer, body: dict[str, Any], field: str) -> None:
    r = httpx.post(f"{gateway.url}/v1/messages", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["type"] == "error"
    assert data["error"]["type"] == "invalid_request_error"
    assert data["error"]["field"] == field


def test_anthropic_sdk_raises_bad_request(gateway: RouterServer) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="llama", max_tokens=0, messages=MSG)  # type: ignore[arg-type]
