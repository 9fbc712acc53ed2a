"""The request object the generating endpoints get (``app.RouterApp``): Starlette's, with
its headers looked up in a dictionary made once.

A completion reads about seven headers, most of them absent. Starlette's ``Headers``
scans the header list for each, and answers ``get`` for an absent one by raising and
catching ``KeyError``: together a few percent of the router's own time per request.
Lookups here are case-insensitive, and a repeated header gives its first value, as
Starlette's do.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request


class FastHeaders(Headers):
    """``Headers`` with ``get``, ``[]`` and ``in`` answered from a dictionary."""

    def __init__(self, scope: Any) -> None:
        super().__init__(scope=scope)
        first: dict[bytes, bytes] = {}
        for name, value in reversed(self._list):
            first[name] = value
        self._first = first

    def get(self, key: str, default: Any = None) -> Any:
        value = self._first.get(key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __getitem__(self, key: str) -> str:
        value = self._first.get(key.lower().encode("latin-1"))
        if value is None:
            raise KeyError(key)
        return value.decode("latin-1")

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower().encode("latin-1") in self._first


class HotRequest(Request):
    """A ``Request`` whose headers are ``FastHeaders``."""

    @property
    def headers(self) -> Headers:
        if not hasattr(self, "_headers"):
            self._headers = FastHeaders(self.scope)
        return self._headers
