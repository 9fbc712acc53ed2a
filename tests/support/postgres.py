"""A private PostgreSQL server for the tests: started, stopped and killed at will.

Uses the server binaries of Debian's ``postgresql`` package (``./dev test``
installs it when missing). Runs as the ``postgres`` user when the tests run as
root, since ``initdb`` refuses root. ``fsync=off``: test data need not survive
a power cut, and it makes the suite much faster. ``synchronous_commit`` stays
on: with it off, a killed server forgets its last commits, which is exactly
what the crash tests must not be fooled by.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port


def server_bin() -> Path:
    override = os.environ.get("SWITCHYARD_PG_BIN")
    candidates = (
        [override]
        if override
        else sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(p.split("/")[-2]),
            reverse=True,
        )
    )
    for c in candidates:
        if c and (Path(c) / "initdb").exists():
            return Path(c)
    raise RuntimeError(
        "PostgreSQL server binaries not found: install Debian's postgresql package "
        "(./dev test does this when run as root) or set SWITCHYARD_PG_BIN"
    )


class PostgresServer:
    def __init__(self) -> None:
        self.bin = server_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="switchyard-pg-"))
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self.as_user + cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        self.proc = subprocess.Popen(
            [
                *self.as_user,
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=128MB",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "postgres.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.dir / 'postgres.log').read_text()}")
            time.sleep(0.05)
        raise RuntimeError("postgres did not become ready in 30 s")

    def kill(self) -> None:
        """Die at once, as a crashed database would: the postmaster and every backend."""
        pid = self._postmaster()
        if pid is not None:
            children = subprocess.run(
                ["pgrep", "-P", str(pid)], capture_output=True, text=True
            ).stdout.split()
            for p in [pid, *map(int, children)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
            self.proc = None

    def _postmaster(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, committed data stays."""
        if self.proc is None:
            return
        pid = self._postmaster()
        if pid is not None:
            # runuser does not pass signals on; speak to the postmaster itself.
            os.kill(pid, signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
