"""An append-only local file for usage records the database could not take yet.

One JSON record a line, flushed and fsynced per batch. Replay reads a
snapshot of the file and writes it through the idempotent store, so a record
replayed twice (after a crash mid-replay) is still stored once.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from switchyard.router.storage.records import UsageRecord


class Spool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.replaying = self.path.with_name(self.path.name + ".replaying")
        #: Records the database refused outright, kept for a person to look at.
        self.rejected = self.path.with_name(self.path.stem + "-rejected.jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def rejected_spool(self) -> Spool:
        return Spool(self.rejected)

    def size(self) -> int:
        total = 0
        for p in (self.path, self.replaying):
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def pending(self) -> bool:
        return self.size() > 0

    def append(self, records: Sequence[UsageRecord]) -> None:
        data = "".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(data.encode())
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def take(self) -> Path | None:
        """Move the spool aside for replay (new records keep appending to a fresh file)."""
        if self.replaying.exists():
            return self.replaying  # an earlier replay did not finish: do it again
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        os.replace(self.path, self.replaying)
        return self.replaying

    @staticmethod
    def read(path: Path, batch: int) -> Iterator[list[UsageRecord]]:
        out: list[UsageRecord] = []
        with path.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(UsageRecord.from_json(json.loads(line)))
                except (ValueError, TypeError, KeyError):
                    continue  # a torn last line from a crash mid-write
                if len(out) >= batch:
                    yield out
                    out = []
        if out:
            yield out

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
