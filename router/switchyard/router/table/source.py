"""The routing table from a file, or from a directory holding a packed table (a mounted
ConfigMap), followed as it changes.

``FileSource`` polls ``stat`` (following symlinks), so edits and the kubelet's atomic
``..data`` symlink swap are both seen. A new version is validated whole and swapped in
at once; a bad one is logged and counted and the last good table keeps serving. (A
ConfigMap followed through the Kubernetes API is ``api_source``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from switchyard.router.contract import RoutingTable
from switchyard.router.errors import ConfigError
from switchyard.router.table import bundle
from switchyard.router.table.loader import load_bytes

log = logging.getLogger("switchyard.router.table")

#: The file looked for when the configured path is a directory (a mounted ConfigMap).
TABLE_FILE = bundle.YAML_KEY

Install = Callable[[RoutingTable, str], None]
Report = Callable[[str, str | None], None]  # ("ok" | "invalid", error or None)


class Follower(Protocol):
    """Something followed in the background: a table source or the provider keys."""

    description: str  # what is followed, for logs and /readyz

    def load_initial(self) -> None:
        """Before the event loop runs (a table file is read here)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def table_path(path: str | Path) -> Path:
    """The file to stat for a path: the file itself, or the table in a directory."""
    p = Path(path)
    if not p.is_dir():
        return p
    for name in (bundle.INDEX_KEY, bundle.GZIP_KEY, bundle.YAML_KEY):
        if (p / name).exists():
            return p / name
    return p / TABLE_FILE


def read_path(path: str | Path) -> tuple[RoutingTable, str]:
    p = Path(path)
    if not p.is_dir():
        try:
            return load_bytes(p.read_bytes(), str(p))
        except OSError as exc:
            raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from None
    files = {}
    for name in (bundle.INDEX_KEY, bundle.GZIP_KEY, bundle.YAML_KEY):
        with contextlib.suppress(OSError):
            files[name] = (p / name).read_bytes()

    def part(_configmap: str, key: str) -> bytes | None:
        try:
            return (p / key).read_bytes()
        except OSError:
            return None

    return load_bytes(bundle.unpack(files, part), str(p))


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileSource:
    def __init__(
        self, path: str | Path, install: Install, report: Report, interval: float = 1.0
    ) -> None:
        self.root = Path(path)
        self.path = table_path(path)
        self.description = str(self.path)
        self._install = install
        self._report = report
        self._interval = interval
        self._signature = _signature(self.path)
        self._checksum: str | None = None
        self._task: asyncio.Task[None] | None = None

    def load_initial(self) -> None:
        """Load at start-up; a bad table here stops the start (ConfigError propagates)."""
        table, checksum = read_path(self.root)
        self._signature = _signature(table_path(self.root))
        self._install(table, checksum)
        self._checksum = checksum
        self._report("ok", None)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def check(self) -> None:
        self.path = table_path(self.root)
        sig = _signature(self.path)
        if sig is None or sig == self._signature:
            return
        self._signature = sig
        try:
            table, checksum = await asyncio.to_thread(read_path, self.root)
            if checksum == self._checksum:
                return
            self._install(table, checksum)
        except ConfigError as exc:
            log.error("routing table %s rejected, keeping the last good one: %s", self.path, exc)
            self._report("invalid", str(exc))
            return
        except Exception as exc:  # never let one bad version stop the follower
            log.exception("routing table %s could not be installed", self.path)
            self._report("invalid", f"{type(exc).__name__}: {exc}")
            return
        self._checksum = checksum
        log.info("routing table %s reloaded (sha256 %s)", self.path, checksum[:12])
        self._report("ok", None)
