"""Follow a routing-table file and swap each good new version in.

Polls ``stat`` of the path (following symlinks), so both an edited file and the
kubelet's atomic ``..data`` symlink swap of a mounted ConfigMap are seen. A bad
new version is logged and counted; the last good table keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from switchyard.router.errors import ConfigError
from switchyard.router.table.loader import load_file
from switchyard.router.table.schema import RoutingTable

log = logging.getLogger("switchyard.router.table")

#: The file looked for when the configured path is a directory (a mounted ConfigMap).
TABLE_FILE = "routing-table.yaml"


def table_path(path: str | Path) -> Path:
    p = Path(path)
    return p / TABLE_FILE if p.is_dir() else p


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TableFollower:
    def __init__(
        self,
        path: str | Path,
        install: Callable[[RoutingTable, str], None],
        on_result: Callable[[str, str | None], None],
        interval: float = 1.0,
    ) -> None:
        self.path = table_path(path)
        self._install = install
        self._on_result = on_result  # ("ok" | "invalid", error message or None)
        self._interval = interval
        self._signature = _signature(self.path)
        self._checksum: str | None = None
        self._task: asyncio.Task[None] | None = None

    def load_initial(self) -> None:
        """Load at start-up; a bad table here stops the start (ConfigError propagates)."""
        table, checksum = load_file(self.path)
        self._signature = _signature(self.path)
        self._install(table, checksum)
        self._checksum = checksum
        self._on_result("ok", None)

    def start(self) -> None:
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
        sig = _signature(self.path)
        if sig is None or sig == self._signature:
            return
        self._signature = sig
        try:
            table, checksum = await asyncio.to_thread(load_file, self.path)
            if checksum == self._checksum:
                return
            self._install(table, checksum)
        except ConfigError as exc:
            log.error("routing table %s rejected, keeping the last good one: %s", self.path, exc)
            self._on_result("invalid", str(exc))
            return
        except Exception as exc:  # never let one bad version stop the follower
            log.exception("routing table %s could not be installed", self.path)
            self._on_result("invalid", f"{type(exc).__name__}: {exc}")
            return
        self._checksum = checksum
        log.info("routing table %s reloaded (sha256 %s)", self.path, checksum[:12])
        self._on_result("ok", None)
