"""A generating endpoint's 200 answer, its headers written once as the server sends them.

Starlette's ``Response`` lowercases, encodes and scans every header name it is given, to
learn whether a content type and length were among them. The router names its own
headers, in lowercase, and knows its content type and length: here they become the
raw pairs the server sends in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

_JSON = (b"content-type", b"application/json")


def raw_headers(
    first: list[tuple[bytes, bytes]], headers: Mapping[str, str]
) -> list[tuple[bytes, bytes]]:
    """``first``, then ``headers`` (lowercase names) as raw pairs, in their order."""
    for name, value in headers.items():
        first.append((name.encode("latin-1"), value.encode("latin-1")))
    return first


class JSONAnswer(Response):
    """A 200 answer of JSON ``body`` with ``headers`` (lowercase names)."""

    media_type = "application/json"

    def __init__(self, body: bytes, headers: Mapping[str, str]) -> None:
        self.body = body
        self.status_code = 200
        self.background = None
        self.raw_headers = raw_headers([_JSON, (b"content-length", b"%d" % len(body))], headers)
