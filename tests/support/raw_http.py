"""HTTP/1.1 by hand over a socket: to send what no client library would."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """One connection to ``url``'s host and port."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self._buf = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, data: bytes, every: float, until: float) -> bool:
        """Send one byte at a time; False once the server closed or ``until`` seconds passed."""
        deadline = time.monotonic() + until
        for i in range(len(data)):
            if time.monotonic() > deadline:
                return False
            try:
                self.sock.sendall(data[i : i + 1])
            except OSError:
                return False
            time.sleep(every)
        return True

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return False
        if not chunk:
            return False
        self._buf += chunk
        return True

    def answer(self, timeout: float = 10.0) -> Answer | None:
        """The next response, or None if the connection closed (or stayed silent) first."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buf:
            if not self._fill(deadline):
                return None
        head, _, rest = self._buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            if not self._fill(deadline):
                break
            rest = self._buf.partition(b"\r\n\r\n")[2]
        self._buf = rest[length:]
        return Answer(status, headers, rest[:length])

    def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection within ``timeout`` (after any answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self._buf += chunk
        return False
