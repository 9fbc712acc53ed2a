"""What is inside a message: images, and fields of content blocks (``cache_control``,
thinking blocks). A provider of the client's protocol gets the conversation as sent;
another gets images translated and the rest in its own terms."""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Factory
from tests.integration.conftest import Fakes, five_providers
from tests.support.servers import RouterServer
from tests.support.tables import KEY, model, table

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()
DATA_URL = f"data:image/png;base64,{PNG}"


def oai(gw: RouterServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)


def claude(gw: RouterServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)


def openai_image_turn(url: str = DATA_URL) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
            ],
        }
    ]


def test_an_openai_image_reaches_an_openai_provider_as_sent(
    gateway: RouterServer, fakes: Fakes
) -> None:
    oai(gateway).chat.completions.create(model="gpt-4o-mini", messages=openai_image_turn())  # type: ignore[arg-type]
    assert fakes.openai.requests[-1].body["messages"] == openai_image_turn()


def test_an_openai_image_reaches_anthropic_and_ollama_as_their_image(
    gateway: RouterServer, fakes: Fakes
) -> None:
    oai(gateway).chat.completions.create(model="claude", messages=openai_image_turn())  # type: ignore[arg-type]
    turn = fakes.anthropic.requests[-1].body["messages"][0]
    assert turn["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is in this picture?"},
    ]
    oai(gateway).chat.completions.create(model="ollama-llama", messages=openai_image_turn())  # type: ignore[arg-type]
    sent = fakes.ollama.requests[-1].body["messages"][0]
    assert sent == {"role": "user", "content": "What is in this picture?", "images": [PNG]}


def test_an_anthropic_image_reaches_openai_as_a_data_url(
    gateway: RouterServer, fakes: Fakes
) -> None:
    claude(gateway).messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "text", "text": "Describe it"},
                ],
            }
        ],
    )
    assert fakes.openai.requests[-1].body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe it"},
                {"type": "image_url", "image_url": {"url": DATA_URL}},
            ],
        }
    ]


def test_image_urls_do_not_go_to_ollama(gateway: RouterServer, fakes: Fakes) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(gateway).chat.completions.create(
            model="ollama-llama",
            messages=openai_image_turn("https://example.com/cat.png"),  # type: ignore[arg-type]
        )
    assert err.value.body["param"] == "messages"  # type: ignore[index]
    assert "URLs" in err.value.body["message"]  # type: ignore[index]
    assert fakes.ollama.completions == 0
    oai(gateway).chat.completions.create(
        model="claude",
        messages=openai_image_turn("https://example.com/cat.png"),  # type: ignore[arg-type]
    )
    block = fakes.anthropic.requests[-1].body["messages"][0]["content"][0]
    assert block == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


def test_images_need_a_model_that_declares_vision(fakes: Fakes, router: Factory) -> None:
    blind = model("blind", "openai", "gpt-3.5-turbo", supportsVision=False)
    gw = router(table(five_providers(fakes), [blind]))
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="blind", messages=openai_image_turn())  # type: ignore[arg-type]
    assert err.value.body["param"] == "messages"  # type: ignore[index]
    assert "supportsVision" in err.value.body["message"]  # type: ignore[index]
    assert fakes.openai.completions == 0


def test_cache_control_and_thinking_blocks_reach_anthropic_as_sent(
    gateway: RouterServer, fakes: Fakes
) -> None:
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "A long document ...",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Short answer.", "signature": "c2lnbmF0dXJl"},
                {"type": "text", "text": "Noted."},
            ],
        },
        {"role": "user", "content": "Summarize it"},
    ]
    claude(gateway).messages.create(
        model="claude",
        max_tokens=50,
        system=system,  # type: ignore[arg-type]
        messages=messages,  # type: ignore[arg-type]
    )
    sent = fakes.anthropic.requests[-1].body
    assert sent["system"] == system and sent["messages"] == messages
    # Another protocol gets the text; the thinking block is Anthropic's alone.
    claude(gateway).messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        system=system,  # type: ignore[arg-type]
        messages=messages,  # type: ignore[arg-type]
    )
    assert fakes.openai.requests[-1].body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "A long document ..."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Summarize it"},
    ]


def test_different_images_are_never_one_cached_answer(gateway: RouterServer, fakes: Fakes) -> None:
    other = base64.b64encode(b"another picture").decode()
    for data in (PNG, other, PNG):
        oai(gateway).chat.completions.create(
            model="gpt-4o-mini",
            temperature=0,
            messages=openai_image_turn(f"data:image/png;base64,{data}"),  # type: ignore[arg-type]
        )
    assert fakes.openai.completions == 2  # the third is the first's cached answer
