"""Resolve API-key references. Keys live only in memory, never in logs or errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from switchyard.router.contract import SecretRef


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    value: str | None
    problem: str | None  # why there is no value; names the reference, never a secret


class KeyRing:
    """The provider keys the operator publishes: a mounted Secret's directory, or the
    Secret's data as read through the Kubernetes API."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self.values: dict[str, str] | None = None  # set when read through the API
        self.source = str(directory) if directory else "(none)"

    def get(self, key: str) -> str | None:
        if self.values is not None:
            return self.values.get(key)
        if self.directory is None:
            return None
        try:
            return (self.directory / key).read_text(encoding="utf-8").strip() or None
        except (OSError, ValueError):
            return None


def resolve(ref: SecretRef | None, keyring: KeyRing | None = None) -> ResolvedKey:
    if ref is None:
        return ResolvedKey(None, None)
    if ref.secret_key is not None:
        value = keyring.get(ref.secret_key) if keyring is not None else None
        if value is None:
            where = keyring.source if keyring is not None else "(no provider-keys secret)"
            return ResolvedKey(None, f"key {ref.secret_key} is not in the provider keys ({where})")
        return ResolvedKey(value, None)
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
