"""Which of a provider's endpoints (model-server pods) serves a call: by live load, with
prompt-cache affinity.

A provider behind a Service has several replicas; calling the Service's address lets
kube-proxy spread connections blindly, so a replica with a queue gets more work while
another idles, and a conversation's next turn lands where its prompt prefix is not in
the KV cache and is computed again. ``Balancer`` picks instead:

- **Load** of an endpoint: the larger of the router's own calls in flight to it and
  what the server last said it holds (running plus waiting, scraped by
  ``providers.load``). The own count is exact and immediate; the scraped one sees the
  other replicas' calls too.
- **Affinity**: a request's key is its conversation's beginning (model, system prompt,
  first message), the same for every turn. It goes where that conversation went last
  (a bounded memory of keys).
- **Placement**: a conversation not seen before has its prefix cached nowhere, so it
  goes to the least loaded endpoint; among equally loaded ones, to the one home to the
  fewest remembered conversations (their later turns come back there), and among those
  to the first from its place on a ring of the endpoints (consistent hashing: the
  router's replicas agree while loads are even, without sharing anything). Where the
  conversation was placed is told to the other replicas (``on_placed``, published on
  the shared state when there is one; they ``learn`` it), so its next turn finds it
  whichever replica takes it.
- **Bounded loads** (consistent hashing with bounded loads, Mirrokni et al.): the
  endpoint affinity names is taken only while its load stays under ``load_factor``
  times the mean (plus the call itself) and no more than ``max_skew`` calls above the
  least loaded endpoint's; otherwise the conversation is placed again, as a new one
  is, and remembered where it went.
- **Out alone**: an endpoint that fails is left out for a growing while (1 s, doubling,
  at most 30 s) while the others serve; the provider's breaker hears of a failure only
  when the call failed on every endpoint it tried (``providers.base``). An endpoint whose
  address stops taking connections (a pod gone with its network) also gives up the
  calls waiting on it, which then go elsewhere (``abandon``).

Bounded: at most ``MAX_ENDPOINTS`` endpoints (the table's limit) and ``affinity_size``
remembered conversations per provider; a key is 8 bytes of a hash, never the text.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from switchyard.router.contract import MAX_ENDPOINTS
from switchyard.router.core.chat import ChatRequest
from switchyard.router.core.slots import SlotTable

#: Points per endpoint on the ring: enough for an even share among a few endpoints.
_RING_POINTS = 64
_OUT_FIRST = 1.0
_OUT_MAX = 30.0

ServerKind = Literal["vllm", "llamacpp", "unknown"]


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def affinity_key(req: ChatRequest, model_name: str) -> int | None:
    """The conversation's key: its model, system prompt and first message, which every
    later turn repeats. None when there is nothing to key on."""
    first = req.messages[0] if req.messages else None
    if first is None and not req.system:
        return None
    parts = (
        model_name,
        req.system or "",
        first.role if first else "",
        first.content if first else "",
    )
    return _hash64("\x00".join(parts).encode("utf-8", "surrogatepass"))


def endpoint_base(base_url: str, address: str) -> str:
    """``base_url`` with its host and port replaced by ``address`` (``host:port``)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, address, parts.path, parts.query, "")).rstrip("/")


def endpoint_root(base_url: str, address: str) -> str:
    """The server's root at ``address``, where ``/metrics`` is."""
    return f"{urlsplit(base_url).scheme}://{address}"


@dataclass(slots=True, eq=False)
class Endpoint:
    """One model-server address and what is known of it now."""

    address: str
    base_url: str
    root: str
    in_flight: int = 0
    #: What the server last said (``providers.load``): None until it has.
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    scraped_at: float | None = None  # wall-clock time
    scrape_error: str | None = None
    #: Taken out alone until this ``time.monotonic()``; its consecutive failures.
    out_until: float = 0.0
    failures: int = 0
    last_failure: str | None = None
    picks: int = 0
    affinity_hits: int = 0
    ring_points: list[int] = field(default_factory=list)
    #: Scrapes in a row that could not connect; at ``LOST_AFTER`` the calls waiting on it
    #: are given up (``abandon``) and go elsewhere.
    unreachable: int = 0
    #: One per call waiting on this endpoint's answer: fired, it ends that wait.
    waits: set[asyncio.Timeout] = field(default_factory=set)
    #: llama.cpp's slots, once its ``/props`` told how many (``providers.load``): each
    #: conversation's calls then name their slot (``core.slots``). None: the server
    #: chooses.
    slots: SlotTable | None = None

    @property
    def load(self) -> float:
        served = (self.running or 0.0) + (self.waiting or 0.0)
        return max(float(self.in_flight), served)

    def available(self, now: float) -> bool:
        return now >= self.out_until


@dataclass(slots=True, frozen=True)
class Pick:
    endpoint: Endpoint
    key: int | None
    affinity: bool  # it went where its conversation went last
    #: The llama.cpp slot the call names (``core.slots``), busy until ``done``.
    slot: int | None = None

    def done(self) -> None:
        """The call ended: the endpoint (and its slot) carry one call fewer (the
        caller counted it in ``in_flight`` when it began)."""
        self.endpoint.in_flight -= 1
        if self.slot is not None and self.endpoint.slots is not None:
            self.endpoint.slots.done(self.slot)


class Balancer:
    """A provider's endpoints and the choice among them; one per adapter, kept across
    table reloads so that loads, affinity and endpoints out survive an edit."""

    def __init__(
        self,
        base_url: str,
        addresses: Sequence[str],
        *,
        load_factor: float = 1.25,
        max_skew: int = 3,
        affinity_size: int = 4096,
    ) -> None:
        self.base_url = base_url
        self.load_factor = load_factor
        self.max_skew = max_skew
        self.affinity_size = affinity_size
        self.endpoints: dict[str, Endpoint] = {}
        self._ring: list[tuple[int, Endpoint]] = []
        self._ring_keys: list[int] = []
        self._last: OrderedDict[int, str] = OrderedDict()
        #: How many of ``_last``'s conversations each address is home to.
        self._homed: Counter[str] = Counter()
        #: What answers at the endpoints, once a scrape has told (``providers.load``).
        self.server: ServerKind = "unknown"
        #: When a call last picked an endpoint (monotonic): scraping idles without calls.
        self.last_pick = 0.0
        #: Told of every placement (a conversation's key, the endpoint's address, its
        #: llama.cpp slot): how the router's other replicas come to know it (``learn``).
        self.on_placed: Callable[[int, str, int | None], None] | None = None
        self.update(base_url, addresses)

    def update(
        self, base_url: str, addresses: Iterable[str]
    ) -> tuple[list[Endpoint], list[Endpoint]]:
        """Follow a new list of addresses: an endpoint that stays keeps its state.
        Returns the endpoints added and removed."""
        wanted = list(dict.fromkeys(addresses))[:MAX_ENDPOINTS]
        changed_base = base_url != self.base_url
        self.base_url = base_url
        removed = [e for a, e in self.endpoints.items() if a not in wanted or changed_base]
        kept = {a: e for a, e in self.endpoints.items() if a in wanted and not changed_base}
        added: list[Endpoint] = []
        endpoints: dict[str, Endpoint] = {}
        for address in wanted:
            ep = kept.get(address)
            if ep is None:
                ep = Endpoint(
                    address, endpoint_base(base_url, address), endpoint_root(base_url, address)
                )
                ep.ring_points = [_hash64(f"{address}#{i}".encode()) for i in range(_RING_POINTS)]
                added.append(ep)
            endpoints[address] = ep
        self.endpoints = endpoints
        ring = sorted((p, e) for e in endpoints.values() for p in e.ring_points)
        self._ring = ring
        self._ring_keys = [p for p, _ in ring]
        return added, removed

    def __len__(self) -> int:
        return len(self.endpoints)

    def _ring_order(self, key: int) -> list[Endpoint]:
        """The endpoints in the ring's order from ``key``'s place, each once."""
        n = len(self._ring)
        start = bisect.bisect_left(self._ring_keys, key)
        seen: dict[str, Endpoint] = {}
        for i in range(n):
            ep = self._ring[(start + i) % n][1]
            if ep.address not in seen:
                seen[ep.address] = ep
                if len(seen) == len(self.endpoints):
                    break
        return list(seen.values())

    def pick(
        self, key: int | None, exclude: Sequence[Endpoint] = (), now: float | None = None
    ) -> Pick | None:
        """The endpoint for a call with affinity ``key``, leaving out ``exclude`` (tried
        already by this call). None when every endpoint is excluded."""
        now = time.monotonic() if now is None else now
        self.last_pick = now
        candidates = [e for e in self.endpoints.values() if e not in exclude]
        if not candidates:
            return None
        up = [e for e in candidates if e.available(now)]
        if not up:
            # Every one is out: try the one whose time out ends first rather than none.
            ep = min(candidates, key=lambda e: e.out_until)
            return self._chose(ep, None, affinity=False, now=now)
        if key is None:
            ep = min(up, key=lambda e: (e.load, e.picks))
            return self._chose(ep, key, affinity=False, now=now)
        # Under the mean's bound, and never more than ``max_skew`` calls above the least
        # loaded: a prefix in a cache is not worth queueing behind an idle replica.
        least = min(e.load for e in up)
        bound = min(
            math.ceil(self.load_factor * (sum(e.load for e in up) + 1) / len(up)),
            least + self.max_skew,
        )
        last = self._last.get(key)
        if last is not None:
            held = self.endpoints.get(last)
            if held is not None and held in up and held.load + 1 <= bound:
                self._last.move_to_end(key)
                return self._chose(held, key, affinity=True, now=now)
        # Placed anew: the least loaded; of those, the home of the fewest conversations,
        # and the first of those from the key's ring place.
        tied = [e for e in up if e.load == least]
        fewest = min(self._homed[e.address] for e in tied)
        usable = {id(e) for e in tied if self._homed[e.address] == fewest}
        for ep in self._ring_order(key):
            if id(ep) in usable:
                return self._chose(ep, key, affinity=False, now=now)
        raise AssertionError("the least loaded endpoint is on the ring")

    def _chose(self, ep: Endpoint, key: int | None, *, affinity: bool, now: float) -> Pick:
        """``ep`` takes the call: counted, its slot taken, and a placement (a new
        endpoint, or a new slot, for the conversation) remembered and told."""
        ep.picks += 1
        if affinity:
            ep.affinity_hits += 1
        slot: int | None = None
        fresh = False
        if key is not None and ep.slots is not None:
            slot, fresh = ep.slots.take(key, now)
        if key is not None and (not affinity or fresh):
            if not affinity:
                self._keep(key, ep.address)
            if self.on_placed is not None:
                self.on_placed(key, ep.address, slot)
        return Pick(ep, key, affinity, slot)

    def _keep(self, key: int, address: str) -> None:
        before = self._last.get(key)
        if before != address:
            if before is not None:
                self._unhome(before)
            self._homed[address] += 1
        self._last[key] = address
        self._last.move_to_end(key)
        while len(self._last) > self.affinity_size:
            _, gone = self._last.popitem(last=False)
            self._unhome(gone)

    def _unhome(self, address: str) -> None:
        # Dropped at zero: addresses come and go with pods.
        self._homed[address] -= 1
        if self._homed[address] <= 0:
            del self._homed[address]

    def learn(self, key: int, address: str, slot: int | None = None) -> bool:
        """Another replica placed conversation ``key`` at ``address`` (in its llama.cpp
        ``slot``): its next turn goes there from this replica too. Ignored (False) for
        an address this provider does not list."""
        ep = self.endpoints.get(address)
        if ep is None:
            return False
        self._keep(key, address)
        if slot is not None and ep.slots is not None:
            ep.slots.give(slot, key, time.monotonic())
        return True

    @staticmethod
    def failed(ep: Endpoint, reason: str, now: float | None = None) -> None:
        """A call (or a scrape that could not connect) failed at ``ep``: out it goes."""
        now = time.monotonic() if now is None else now
        ep.failures += 1
        ep.last_failure = reason
        ep.out_until = now + min(_OUT_MAX, _OUT_FIRST * 2 ** (ep.failures - 1))

    @staticmethod
    def abandon(ep: Endpoint) -> int:
        """The endpoint cannot be reached at all (its pod is gone, its address answers
        nothing): every call waiting on its answer ends now, to be tried elsewhere,
        rather than when its own timeout would end it. Returns how many."""
        waits = list(ep.waits)
        if waits:
            now = asyncio.get_running_loop().time()
            for wait in waits:
                wait.reschedule(now)
        return len(waits)

    @staticmethod
    def succeeded(ep: Endpoint) -> None:
        if ep.failures:
            ep.failures = 0
            ep.out_until = 0.0

    def any_up(self, now: float | None = None) -> bool:
        """Whether an endpoint could take a call now."""
        now = time.monotonic() if now is None else now
        return any(e.available(now) for e in self.endpoints.values())

    def views(self, now: float | None = None) -> list[dict[str, object]]:
        """The endpoints as the providers API and the console show them."""
        now = time.monotonic() if now is None else now
        return [
            {
                "address": e.address,
                "state": "in" if e.available(now) else "out",
                "outForSeconds": round(max(0.0, e.out_until - now), 1),
                "consecutiveFailures": e.failures,
                "lastFailure": e.last_failure,
                "inFlight": e.in_flight,
                "running": e.running,
                "waiting": e.waiting,
                "kvCacheUsage": e.kv_cache_usage,
                "scrapedAt": e.scraped_at,
                "scrapeError": e.scrape_error,
                "picks": e.picks,
                "affinityHits": e.affinity_hits,
                "slots": e.slots.count if e.slots is not None else None,
            }
            for e in self.endpoints.values()
        ]
