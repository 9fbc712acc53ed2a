"""Run the router in-process on a loopback port, and the local model as a process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from switchyard.router.app import create_app
from switchyard.router.server import ServerLimits, listen
from switchyard.router.server import config as server_config
from switchyard.router.tracing import TraceConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_table(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically, as the kubelet and careful editors do."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


class RouterServer:
    """The real app under the router's own server configuration, in a thread."""

    def __init__(
        self,
        table_path: Path,
        reload_interval: float = 0.1,
        database_url: str | None = None,
        state_dir: Path | None = None,
        limits: ServerLimits | None = None,
        sqlite_path: Path | None = None,
        tracing: TraceConfig | None = None,
    ) -> None:
        self.table_path = table_path
        state = state_dir or table_path.with_name(table_path.stem + "-state")
        state.mkdir(exist_ok=True)
        self.state_dir = state
        #: The SQLite store's file (another router's, for replicas sharing one).
        self.sqlite_path = sqlite_path or state / "switchyard.db"
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        #: /healthz, /readyz and /metrics: not on the API port.
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.app = create_app(
            table_path,
            reload_interval=reload_interval,
            database_url=database_url,
            sqlite_path=self.sqlite_path,
            admin_port=self.admin_port,
            spool_path=state / "usage-spool.jsonl",
            tracing=tracing,
        )
        config = server_config(self.app, "127.0.0.1", self.port, limits=limits, log_level="warning")
        self.server = uvicorn.Server(config)
        sockets = [listen("127.0.0.1", self.port), listen("127.0.0.1", self.admin_port)]
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": sockets}, daemon=True
        )

    @property
    def services(self) -> Any:
        return self.app.services

    def start(self) -> RouterServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the router did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def rewrite(self, doc: dict[str, Any], wait: bool = True) -> None:
        loads = self.services.table_loads
        write_table(self.table_path, doc)
        if wait:
            deadline = time.monotonic() + 5
            while self.services.table_loads == loads:
                if time.monotonic() > deadline:
                    raise AssertionError("the router did not reload its table")
                time.sleep(0.02)


class LocalModel:
    """``switchyard local-model`` as its own process, as ``switchyard up`` runs it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalModel:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "switchyard.cli",
                "local-model",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the local model exited at start")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the local model did not start in 60 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
