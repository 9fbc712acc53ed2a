"""Resolve API-key references. Keys live only in memory, never in logs or errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from switchyard.router.table.schema import SecretRef


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    value: str | None
    problem: str | None  # why there is no value; names the reference, never a secret


def resolve(ref: SecretRef | None) -> ResolvedKey:
    if ref is None:
        return ResolvedKey(None, None)
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            return ResolvedKey(None, f"environment variable {ref.env} is not set")
        return ResolvedKey(value.strip(), None)
    assert ref.file is not None
    try:
        value = Path(ref.file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        return ResolvedKey(None, f"cannot read key file {ref.file}: {exc.strerror or exc}")
    except ValueError:
        return ResolvedKey(None, f"key file {ref.file} is not UTF-8 text")
    if not value:
        return ResolvedKey(None, f"key file {ref.file} is empty")
    return ResolvedKey(value, None)
