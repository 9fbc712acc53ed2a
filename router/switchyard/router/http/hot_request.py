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

#: Header names as the server gives them (lowercase bytes), by the names code asks for.
#: Code asks for a few constant names; the bound keeps a caller's names out of it.
_NAMES: dict[str, bytes] = {}
_MAX_NAMES = 256


def _name(key: str) -> bytes:
    name = _NAMES.get(key)
    if name is None:
        name = key.lower().encode("latin-1")
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[key] = name
    return name


class FastHeaders(Headers):
    """``Headers`` with ``get``, ``[]`` and ``in`` answered from a dictionary."""

    def __init__(self, scope: Any) -> None:
        # As Starlette's: the scope's headers as a list, the same list.
        raw = scope["headers"]
        if type(raw) is not list:
            raw = scope["headers"] = list(raw)
        self._list = raw
        # The server gives names in lowercase; reversed, a repeated name keeps its first.
        self._first: dict[bytes, bytes] = dict(reversed(raw))

    def get(self, key: str, default: Any = None) -> Any:
        value = self._first.get(_NAMES.get(key) or _name(key))
        return default if value is None else value.decode("latin-1")

    def __getitem__(self, key: str) -> str:
        value = self._first.get(_name(key))
        if value is None:
            raise KeyError(key)
        return value.decode("latin-1")

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and _name(key) in self._first


class HotRequest(Request):
    """A ``Request`` whose headers are ``FastHeaders``, made when the request is: an
    attribute, where Starlette's are a property that checks for them at every use."""

    headers: FastHeaders = None  # type: ignore[assignment]  # set by __init__

    def __init__(self, scope: Any, receive: Any, send: Any) -> None:
        super().__init__(scope, receive, send)
        self.headers = self._headers = FastHeaders(scope)
