"""Loopback fakes of the LLM providers Switchyard routes to.

Each fake is an aiohttp server on 127.0.0.1 (free port) running in a
background thread, speaking one provider's wire format and able to inject
faults into completion requests. See ``server.FakeServer`` for the shared
interface and ``content`` for the deterministic reply rules.
"""

from .anthropic import FakeAnthropic
from .azure import FakeAzureOpenAI
from .faults import Fault
from .ollama import FakeOllama
from .openai import FakeOpenAI
from .server import FakeServer, RecordedRequest
from .vllm import FakeVLLM

__all__ = [
    "FakeAnthropic",
    "FakeAzureOpenAI",
    "FakeOllama",
    "FakeOpenAI",
    "FakeServer",
    "FakeVLLM",
    "Fault",
    "RecordedRequest",
]
