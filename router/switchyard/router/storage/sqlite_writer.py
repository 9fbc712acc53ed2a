"""The SQLite store's usage writer: a child process fed batches of rows over a pipe.

A plain child (``python -m switchyard.router.storage.sqlite_writer PATH``) rather than
a multiprocessing pool: multiprocessing's spawn start also starts its resource tracker,
one more interpreter (about 6 MiB) that a writer with no shared semaphores or memory
does not need. Each message either way is a 4-byte length and a pickle: a batch of rows
to the writer; back, the number of new records or the store error it raised. The
writer exits when its input closes, or (Linux) when the router dies.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
import sys
from collections.abc import Sequence
from typing import BinaryIO

from switchyard.router.storage.base import StoreUnavailable

_LENGTH = struct.Struct(">I")
#: How long a closing writer may take over its last batch.
_CLOSE_SECONDS = 30.0


def _frame(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


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
        # The child finds this package where the router found it, as spawn would.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, path,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        writer = cls(proc)
        answer = await writer._exchange(None)
        if isinstance(answer, BaseException):
            writer.kill()
            raise answer
        return writer

    @property
    def alive(self) -> bool:
        return not self._ended and self._proc.returncode is None

    async def write(self, rows: Sequence[tuple[object, ...]]) -> int:
        """Write ``rows``; the writer's StoreUnavailable or StoreRefused is raised here."""
        answer = await self._exchange(list(rows))
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, int)
        return answer

    async def _exchange(self, rows: list[tuple[object, ...]] | None) -> object:
        """Send ``rows`` (none: only the writer's first answer) and read the answer. A
        writer that dies, or whose answer is not awaited to the end, is killed: the next
        message would be read out of turn."""
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        async with self._turn:
            try:
                if rows is not None:
                    stdin.write(_frame(rows))
                    await stdin.drain()
                (size,) = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))
                return pickle.loads(await stdout.readexactly(size))
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


def _serve(path: str, source: BinaryIO, sink: BinaryIO) -> None:
    import sqlite3

    from switchyard.router.storage.sqlite import _die_with_parent, _mapped, _open_writer_conn

    _die_with_parent()
    try:
        conn = _open_writer_conn(path)
    except sqlite3.Error as exc:
        sink.write(_frame(_mapped(exc)))
        sink.flush()
        return
    from switchyard.router.storage.sqlite import _write_rows

    sink.write(_frame(0))
    sink.flush()
    while head := source.read(_LENGTH.size):
        (size,) = _LENGTH.unpack(head)
        rows = pickle.loads(source.read(size))
        answer: object
        try:
            answer = _write_rows(conn, rows)
        except sqlite3.Error as exc:
            answer = _mapped(exc)
        sink.write(_frame(answer))
        sink.flush()


if __name__ == "__main__":
    # Answers go to a copy of stdout; what else writes to stdout goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.argv[1], sys.stdin.buffer, answers)
