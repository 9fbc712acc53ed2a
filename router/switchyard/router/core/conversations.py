"""Kept conversations: Responses API answers (``store``, ``previous_response_id``) and
Anthropic message threads, scoped to their organization.

A conversation is a chain of turns, each stored once (``storage.base.Turn``): what its
request added and the answer it got, pointing back at the turn it continued. Continuing
reads the chain; ``GET /v1/responses/{id}`` reads one answer and nothing else.

What one key can make the router keep, and hold while it continues, is bounded: a
conversation stops growing at ``routing.maxStoredConversationBytes`` of stored JSON (a
continuation beyond it is refused before anything is read or spent), and selection
refuses one whose counted tokens no model's context window holds. A turn whose store
write fails after its answer was made is served all the same, and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from switchyard.router.errors import (
    BadRequest,
    ConversationsBusy,
    NotFound,
    StorageUnavailable,
    TooManyInFlight,
)
from switchyard.router.metrics import Metrics
from switchyard.router.storage.base import (
    Store,
    StoreError,
    StoreRefused,
    Turn,
    TurnHead,
    TurnKind,
)
from switchyard.router.storage.records import utcnow

log = logging.getLogger("switchyard.router.conversations")

#: The ids the router gives each kind's answers; any other id names nothing kept.
_IDS = {
    "response": re.compile(r"^resp_[0-9a-f]{32}$"),
    "thread": re.compile(r"^msg_[0-9a-f]{32}$"),
}

#: How many conversations of the largest size one key, and the process, may hold at once.
KEY_SHARE = 2
PROCESS_SHARE = 4
#: Turns a conversation may have: as many items as one request may send.
MAX_TURNS = 10_000
#: After a failed write, turns are not tried again for this long: answers are served at
#: once rather than after the store's timeout, each time.
RETRY_SECONDS = 5.0
#: A write that takes longer than this is given up (the answer is served regardless).
WRITE_TIMEOUT = 5.0


@dataclass(slots=True)
class Earlier:
    """A kept conversation read back, first turn first: each turn's own input items and
    the answer it got, parsed; and the context its first turn held (a thread's)."""

    head: TurnHead
    items: list[list[Any]]
    answers: list[dict[str, Any]]
    context: dict[str, Any] | None


def json_size(value: Any) -> int:
    """Bytes ``value`` takes as stored JSON."""
    return len(orjson.dumps(value))


class Lease:
    """Bytes of kept conversation one request holds in memory; ``release`` is safe to
    call more than once."""

    __slots__ = ("_held", "_key", "_owner", "size")

    def __init__(self, owner: Conversations, key: tuple[str, str], size: int) -> None:
        self._owner = owner
        self._key = key
        self._held = True
        self.size = size

    def release(self) -> None:
        if self._held:
            self._held = False
            self._owner._give_back(self._key, self.size)


class Conversations:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._down_until = 0.0
        self._purger: asyncio.Task[None] | None = None
        #: Conversation bytes read into memory for requests now, by API key and in all.
        self._by_key: dict[tuple[str, str], int] = {}
        self._total = 0
        #: Each key's bucket of conversation bytes it may read (level, when last taken).
        self._rates: dict[tuple[str, str], tuple[float, float]] = {}

    # -- memory -------------------------------------------------------------------
    def lease(self, key: tuple[str, str], size: int, limit: int) -> Lease:
        """Room to read a conversation of ``size`` stored bytes for one request.

        A key may hold two conversations of the largest size (``limit``,
        ``routing.maxStoredConversationBytes``) at once, and every key together four:
        however many requests continue long conversations, what they hold is bounded.
        Beyond its share a key is refused (429, as when it has too many requests in
        flight); when the process as a whole is full, 503 for a moment. And a key reads
        at most ``limit`` bytes of conversations a second (two at once): reading and
        sending a long conversation takes the event loop for milliseconds, and one key
        doing nothing else must leave it to everyone else most of the time."""
        self._check_rate(key, size, limit)
        held = self._by_key.get(key, 0)
        if held and held + size > KEY_SHARE * limit:
            raise TooManyInFlight(
                f"API key {key[1]!r} is continuing conversations of {held} bytes already, "
                f"as much as one key may at once; retry when one finishes"
            )
        if self._total and self._total + size > PROCESS_SHARE * limit:
            raise ConversationsBusy(
                "this router is continuing as many long conversations as it holds at "
                "once; retry in a moment"
            )
        self._by_key[key] = held + size
        self._total += size
        return Lease(self, key, size)

    def _check_rate(self, key: tuple[str, str], size: int, limit: int) -> None:
        """Take ``size`` from the key's bucket, refilled at ``limit`` bytes a second up to
        ``KEY_SHARE`` times that; a 429 saying when there will be enough."""
        now = time.monotonic()
        burst = KEY_SHARE * limit
        level, at = self._rates.get(key, (burst, now))
        level = min(burst, level + (now - at) * limit)
        if size > level:
            wait = max(1, math.ceil((min(size, burst) - level) / limit))
            raise TooManyInFlight(
                f"API key {key[1]!r} has read {burst - int(level)} bytes of kept "
                f"conversations lately, as much as one key may (routing."
                f"maxStoredConversationBytes a second); retry in {wait} s",
                retry_after=wait,
            )
        self._rates[key] = (level - size, now)

    def _give_back(self, key: tuple[str, str], size: int) -> None:
        left = self._by_key[key] - size
        if left:
            self._by_key[key] = left
        else:
            del self._by_key[key]
        self._total -= size

    # -- reading ------------------------------------------------------------------
    async def head(
        self, organization: str, kind: TurnKind, id: str, field: str | None = None
    ) -> TurnHead:
        """The kept turn ``id`` of ``kind``, without its conversation; a 404 naming
        ``field`` when the organization has none such."""
        if not _IDS[kind].match(id):
            raise NotFound(f"No {_NOUN[kind]} with id {id[:80]!r} found.", field=field)
        try:
            head = await self.store.turn_head(organization, kind, id, utcnow())
        except StoreError as exc:
            raise StorageUnavailable(f"kept conversations cannot be read now: {exc}") from exc
        if head is None:
            raise NotFound(f"No {_NOUN[kind]} with id '{id}' found.", field=field)
        return head

    async def read(self, organization: str, head: TurnHead, field: str | None = None) -> Earlier:
        """The conversation through ``head``. Each turn's JSON is parsed as it is taken,
        so the conversation is held once, not as bytes and objects at a time."""
        try:
            chain = await self.store.turn_chain(organization, head.id)
        except StoreError as exc:
            raise StorageUnavailable(f"kept conversations cannot be read now: {exc}") from exc
        earlier = Earlier(head, [], [], None)
        chain.reverse()
        while chain:
            turn = chain.pop()  # its bytes go once parsed
            if turn.answer is None or turn.items is None:
                raise BadRequest(
                    f"{field or 'id'}: an earlier turn of this conversation ({turn.id}) was "
                    "deleted; start a new conversation",
                    field=field,
                )
            earlier.items.append(orjson.loads(turn.items))
            earlier.answers.append(orjson.loads(turn.answer))
            if turn.context is not None and earlier.context is None:
                earlier.context = orjson.loads(turn.context)
        if not earlier.answers or len(earlier.answers) != head.depth + 1:
            # A turn went (purged, or deleted by hand) between the head and the chain.
            raise NotFound(f"No {_NOUN[head.kind]} with id '{head.id}' found.", field=field)
        return earlier

    async def answer(self, organization: str, kind: TurnKind, id: str) -> bytes:
        """A kept answer's JSON as it was served, and nothing of its conversation."""
        if not _IDS[kind].match(id):
            raise NotFound(f"No {_NOUN[kind]} with id {id[:80]!r} found.")
        try:
            answer = await self.store.turn_answer(organization, kind, id, utcnow())
        except StoreError as exc:
            raise StorageUnavailable(f"kept conversations cannot be read now: {exc}") from exc
        if answer is None:
            raise NotFound(f"No {_NOUN[kind]} with id '{id}' found.")
        return answer

    # -- limits -------------------------------------------------------------------
    @staticmethod
    def check_size(previous: TurnHead | None, adding: int, limit: int, field: str) -> None:
        """A 400 naming ``field`` when the conversation through ``previous`` and the
        ``adding`` bytes of this turn pass ``limit`` (``routing.maxStoredConversationBytes``),
        or it would have more than ``MAX_TURNS`` turns."""
        before = previous.conversation_bytes if previous else 0
        if previous is not None and previous.depth + 1 >= MAX_TURNS:
            raise BadRequest(
                f"{field}: this conversation has {MAX_TURNS} turns, as many as a stored "
                "conversation may have; start a new conversation",
                field=field,
            )
        if before + adding > limit:
            held = (
                f"holds {before} bytes and this turn adds {adding}"
                if before
                else (f"would start with {adding} bytes")
            )
            raise BadRequest(
                f"{field}: this conversation {held}, more than the {limit} a stored "
                "conversation may hold (routing.maxStoredConversationBytes); start a new "
                "conversation, or send it whole without storing it",
                field=field,
            )

    # -- writing ------------------------------------------------------------------
    async def keep(
        self,
        organization: str,
        kind: TurnKind,
        answer: dict[str, Any],
        items: list[Any],
        *,
        context: dict[str, Any] | None,
        previous: TurnHead | None,
        tokens: int,
        days: int,
    ) -> bool:
        """Keep one turn; False (and a log line) when the store cannot take it now.

        The answer was made and paid for, so a store that is down or refuses the data
        does not turn it into an error: it is served, and a later lookup of its id is a
        404. After a failure, writes rest for ``RETRY_SECONDS`` so that answers are not
        each held for the store's timeout."""
        answer_json = orjson.dumps(answer)
        items_json = orjson.dumps(items)
        context_json = orjson.dumps(context) if context is not None else None
        size = len(answer_json) + len(items_json) + len(context_json or b"")
        now = utcnow()
        turn = Turn(
            id=answer["id"],
            organization=organization,
            kind=kind,
            previous_id=previous.id if previous else None,
            depth=previous.depth + 1 if previous else 0,
            answer=answer_json,
            items=items_json,
            context=context_json,
            conversation_bytes=(previous.conversation_bytes if previous else 0) + size,
            conversation_tokens=tokens,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        if time.monotonic() < self._down_until:
            self.metrics.turns_not_kept.labels("unavailable").inc()
            return False
        try:
            await asyncio.wait_for(self.store.turn_put(turn), WRITE_TIMEOUT)
        except (StoreError, TimeoutError) as exc:
            refused = isinstance(exc, StoreRefused)
            self.metrics.turns_not_kept.labels("refused" if refused else "unavailable").inc()
            if not refused:
                self._down_until = time.monotonic() + RETRY_SECONDS
            log.error(
                "%s %s was served but not kept: %s",
                _NOUN[kind],
                turn.id,
                exc or "the store did not answer in time",
            )
            return False
        return True

    async def forget(self, organization: str, kind: TurnKind, id: str) -> None:
        if not _IDS[kind].match(id):
            raise NotFound(f"No {_NOUN[kind]} with id {id[:80]!r} found.")
        try:
            found = await self.store.turn_delete(organization, kind, id)
        except StoreError as exc:
            raise StorageUnavailable(f"kept conversations cannot be changed now: {exc}") from exc
        if not found:
            raise NotFound(f"No {_NOUN[kind]} with id '{id}' found.")

    # -- upkeep -------------------------------------------------------------------
    def start(self, every: float = 3600.0) -> None:
        self._purger = asyncio.get_running_loop().create_task(self._purge(every))

    async def _purge(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                purged = await self.store.turn_purge(utcnow())
                if purged:
                    log.info("purged %d expired conversation turns", purged)
            except Exception as exc:
                log.warning("purging kept conversations failed: %s", exc)

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger


_NOUN: dict[str, str] = {"response": "response", "thread": "message"}


@dataclass(slots=True)
class Keeping:
    """What a request that is kept adds to its conversation: this turn's own input as
    stored, the context a thread holds from its create, and the turn it continues."""

    kind: TurnKind
    items: list[Any]
    context: dict[str, Any] | None = None
    previous: TurnHead | None = None
