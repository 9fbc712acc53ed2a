"""What a model server's Prometheus ``/metrics`` says of its load: pure parsing.

- vLLM: ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and
  ``vllm:kv_cache_usage_perc`` (``vllm:gpu_cache_usage_perc`` before v0.10), one line
  per served model, summed.
- llama.cpp's server (started with ``--metrics``): ``llamacpp:requests_processing``,
  ``llamacpp:requests_deferred`` and, where it has it, ``llamacpp:kv_cache_usage_ratio``.

Only those lines are read; the rest of the exposition (histograms and all) is skipped
without being split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ServerKind = Literal["vllm", "llamacpp"]

_RUNNING = {
    b"vllm:num_requests_running": "vllm",
    b"llamacpp:requests_processing": "llamacpp",
}
_WAITING = {b"vllm:num_requests_waiting", b"llamacpp:requests_deferred"}
_KV = {b"vllm:kv_cache_usage_perc", b"vllm:gpu_cache_usage_perc", b"llamacpp:kv_cache_usage_ratio"}
_PREFIXES = (b"vllm:", b"llamacpp:")


@dataclass(slots=True, frozen=True)
class ServerLoad:
    kind: ServerKind
    running: float
    waiting: float
    kv_cache_usage: float | None


def _sample(line: bytes) -> tuple[bytes, float] | None:
    """A sample line's metric name and value (labels and timestamp dropped)."""
    brace = line.find(b"{")
    if brace >= 0:
        name, rest = line[:brace], line[line.rfind(b"}") + 1 :]
    else:
        name, _, rest = line.partition(b" ")
    fields = rest.split()
    if not fields:
        return None
    try:
        return name.strip(), float(fields[0])
    except ValueError:
        return None


def parse_load(text: bytes) -> ServerLoad | None:
    """The load in a ``/metrics`` exposition; None when it is neither server's."""
    kind: ServerKind | None = None
    running = waiting = 0.0
    kv: float | None = None
    for line in text.splitlines():
        if not line.startswith(_PREFIXES):
            continue
        sample = _sample(line)
        if sample is None:
            continue
        name, value = sample
        if value != value:  # NaN
            continue
        if name in _RUNNING:
            kind = kind or _RUNNING[name]  # type: ignore[assignment]
            running += value
        elif name in _WAITING:
            waiting += value
        elif name in _KV:
            kv = value if kv is None else max(kv, value)
    if kind is None:
        return None
    return ServerLoad(kind, running, waiting, kv)
