"""Loopback fakes of the LLM providers Switchyard routes to."""

from .faults import Fault
from .openai import FakeOpenAI
from .server import FakeServer, RecordedRequest

__all__ = ["FakeOpenAI", "FakeServer", "Fault", "RecordedRequest"]
