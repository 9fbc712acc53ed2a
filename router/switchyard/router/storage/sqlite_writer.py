"""The router's side of the SQLite store's usage writer: a child process fed batches of
rows over a pipe.

A plain child (``python -S -P .../storage/sqlite_usage.py PATH``) rather than
a multiprocessing pool: multiprocessing's spawn start also starts its resource tracker,
one more interpreter (about 6 MiB) that a writer with no shared semaphores or memory
does not need; and the child imports ``sqlite_usage`` alone, not the router. The
messages are ``sqlite_usage``'s. The writer exits when its input closes: when the
router closes it, or dies.
"""

from __future__ import annotations

import asyncio
import marshal
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from switchyard.router.storage import sqlite_usage
from switchyard.router.storage.base import StoreRefused, StoreUnavailable
from switchyard.router.storage.sqlite_usage import LENGTH, frame

if TYPE_CHECKING:
    from switchyard.router.storage.sqlite_usage import ErrorKind

#: How long a closing writer may take over its last batch.
_CLOSE_SECONDS = 30.0
#: Rows per message, whatever the caller hands ``write``: a batch of thousands would be
#: held twice in the writer at once, as its bytes and as its objects, and its heap
#: would keep that size. (The recorder's batches are no larger by default.)
PIECE = 500


def store_error(kind: ErrorKind, message: str) -> StoreRefused | StoreUnavailable:
    """An SQLite error as the store's: what a retry will not mend, and what it may."""
    return StoreRefused(message) if kind == "refused" else StoreUnavailable(message)


def _failure(answer: object) -> StoreRefused | StoreUnavailable | None:
    """The store error an answer reports, if it is one."""
    if isinstance(answer, tuple):
        kind, message = answer
        return store_error(kind, message)
    return None


class WriterProcess:
    """The router's side of one writer process; one batch at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._turn = asyncio.Lock()
        #: Killed or closed: its exit may not have been seen yet.
        self._ended = False

    @classmethod
    async def start(cls, path: str) -> WriterProcess:
        """A writer on the database at ``path``, once it has opened it."""
        # The child finds this package where the router found it, as spawn would. It
        # runs the file rather than ``-m`` the module, which would import runpy and
        # importlib's machinery (0.4 MiB); ``-P`` keeps the file's folder off its path.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-S", "-P", sqlite_usage.__file__, path,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        writer = cls(proc)
        failure = _failure(await writer._exchange(None))
        if failure is not None:
            writer.kill()
            raise failure
        return writer

    @property
    def alive(self) -> bool:
        return not self._ended and self._proc.returncode is None

    async def write(self, rows: Sequence[tuple[object, ...]]) -> int:
        """Write ``rows``, ``PIECE`` at a time, each piece its own transaction; the
        writer's StoreUnavailable or StoreRefused is raised here. A piece that fails
        leaves those before it stored: the batch, spooled and written again, adds only
        the records not stored before (by id)."""
        new = 0
        for start in range(0, len(rows), PIECE):
            answer = await self._exchange(list(rows[start : start + PIECE]))
            failure = _failure(answer)
            if failure is not None:
                raise failure
            assert isinstance(answer, int)
            new += answer
        return new

    async def _exchange(self, rows: list[tuple[object, ...]] | None) -> object:
        """Send ``rows`` (none: only the writer's first answer) and read the answer. A
        writer that dies, or whose answer is not awaited to the end, is killed: the next
        message would be read out of turn."""
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        async with self._turn:
            try:
                if rows is not None:
                    stdin.write(frame(rows))
                    await stdin.drain()
                (size,) = LENGTH.unpack(await stdout.readexactly(LENGTH.size))
                return marshal.loads(await stdout.readexactly(size))
            except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                self.kill()
                raise StoreUnavailable("the usage writer process died") from exc
            except BaseException:
                self.kill()
                raise

    def kill(self) -> None:
        if self.alive:
            self._ended = True
            self._proc.kill()

    async def close(self) -> None:
        """Let the writer finish and exit; kill it if it will not."""
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), _CLOSE_SECONDS)
        except TimeoutError:
            self.kill()
            await self._proc.wait()
        self._ended = True
