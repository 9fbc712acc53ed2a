"""A steady load of completions against a URL, from a few threads, while something
happens to the cluster; every outcome is counted.

A request that meets a connection error or a 5xx is tried again (as the official SDKs
do, up to ``retries`` times); ``retried`` counts those second tries, ``failed`` the
requests that never got a 200.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    retried: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # of the requests that failed
    transient: Counter[str] = field(default_factory=Counter)  # of the tries that were retried
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> str:
        def top(c: Counter[str]) -> str:
            return ", ".join(f"{k} x{n}" for k, n in c.most_common(5)) or "none"

        return (
            f"{self.sent} sent, {self.ok} answered, {self.failed} failed ({top(self.errors)}), "
            f"{self.retried} tried again ({top(self.transient)})"
        )


class SteadyLoad:
    def __init__(
        self,
        url: str,
        key: str,
        model: str,
        *,
        rate: float = 20.0,
        threads: int = 4,
        retries: int = 2,
        max_tokens: int = 8,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.body = {
            "model": model,
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": max_tokens,
        }
        self.interval = threads / rate
        self.threads = threads
        self.retries = retries
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> SteadyLoad:
        for i in range(self.threads):
            t = threading.Thread(target=self._work, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._workers:
            t.join(60)
        self._workers.clear()
        return self.result

    def _work(self, i: int) -> None:
        next_at = time.monotonic() + self.interval * i / self.threads
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                next_at += self.interval
                self._one(client)

    def _one(self, client: httpx.Client) -> None:
        started = time.monotonic()
        retried: list[str] = []
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                retried.append(error)
                time.sleep(0.2)
            try:
                r = client.post(self.url, json=self.body, headers=self.headers)
            except httpx.TransportError as exc:
                error = type(exc).__name__
                continue
            if r.status_code == 200:
                error = ""
                break
            error = f"HTTP {r.status_code}"
            if r.status_code < 500:
                break
        with self._lock:
            res = self.result
            res.sent += 1
            res.retried += len(retried)
            res.transient.update(retried)
            if error:
                res.failed += 1
                res.errors[error] += 1
            else:
                res.ok += 1
                res.latencies.append(time.monotonic() - started)
