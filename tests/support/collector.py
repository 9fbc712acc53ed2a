"""A real OpenTelemetry Collector, built from the Go module proxy (``otelcol/build.sh``),
receiving OTLP/HTTP and writing every span it receives to a file, one OTLP JSON object
a line: what a router exports, read back as a trace backend would store it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port

BUILD = Path(__file__).with_name("otelcol") / "build.sh"

CONFIG = """\
extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {path}
    flush_interval: 50ms
service:
  extensions: [health_check]
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"""


def build() -> str:
    """The collector binary's path; built once, then cached (None: Go is missing)."""
    if shutil.which("go") is None:
        raise FileNotFoundError(
            "go is not on PATH: the collector is built from the Go module proxy"
        )
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"building the collector failed:\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Span:
    """One span as the collector wrote it."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status: dict[str, Any]
    events: list[dict[str, Any]]
    service: str


def _value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in items or []}


class Collector:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.health = free_port()
        self.path = workdir / "spans.jsonl"
        config = workdir / "collector.yaml"
        config.write_text(CONFIG.format(port=self.port, health=self.health, path=self.path))
        self.log = (workdir / "collector.log").open("wb")
        self.process = subprocess.Popen(
            [binary, f"--config={config}"], stdout=self.log, stderr=subprocess.STDOUT
        )
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/traces"
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the collector exited: {(workdir / 'collector.log').read_text()}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.health}/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the collector did not become healthy in 30 s")
            time.sleep(0.05)

    def spans(self) -> list[Span]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            for rs in json.loads(line).get("resourceSpans", []):
                service = _attributes(rs.get("resource", {}).get("attributes", [])).get(
                    "service.name", ""
                )
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        out.append(
                            Span(
                                trace_id=s["traceId"],
                                span_id=s["spanId"],
                                parent_span_id=s.get("parentSpanId", ""),
                                name=s["name"],
                                kind=s.get("kind", 0),
                                attributes=_attributes(s.get("attributes", [])),
                                status=s.get("status", {}),
                                events=s.get("events", []),
                                service=service,
                            )
                        )
        return out

    def wait_for(
        self, what: str, found: Callable[[list[Span]], bool], timeout: float = 15
    ) -> list[Span]:
        """The spans received, once ``found`` says they are what was waited for."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if found(spans):
                return spans
            if time.monotonic() > deadline:
                names = [(s.name, s.trace_id[:8]) for s in spans]
                raise AssertionError(f"no {what} within {timeout} s; received: {names}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
