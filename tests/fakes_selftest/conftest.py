from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FakeAnthropic, FakeAzureOpenAI, FakeOllama, FakeOpenAI, FakeVLLM


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_azure() -> Iterator[FakeAzureOpenAI]:
    with FakeAzureOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[FakeVLLM]:
    with FakeVLLM() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    for name in ("fake_openai", "fake_azure", "fake_vllm", "fake_anthropic", "fake_ollama"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
