"""Which of a llama.cpp server's slots a conversation's calls use.

llama.cpp keeps one prompt per slot (its ``--parallel`` slots). Left to choose, it gives
a request the idle slot whose prompt shares the most with it: a new conversation that
begins with the same system prompt as one under way takes that one's slot, and the
older conversation's next turn, though sent to the right server, computes its whole
prompt again (the server's host-memory prompt cache keeps an evicted prompt only when
the new one shares less than half of it). The router knows which conversation each
call belongs to, so it names the slot (``id_slot`` in the request): a conversation keeps
its slot while it is used, and a new one takes the slot used least recently among those
this router has no call on. A slot named while another call holds it makes the server
hold the new call until that one ends, even with other slots free: so when every slot
has a call on it, a new conversation names none and the server gives it the first slot
that frees, as it would without the router; its next turn takes a slot then.

Bounded: one entry per slot (``MAX_SLOTS`` at most); a conversation given a slot
another held takes it over, and the other's next turn gets a slot afresh.
"""

from __future__ import annotations

#: The most slots followed per server; llama.cpp servers run a handful.
MAX_SLOTS = 256


class SlotTable:
    """One llama.cpp server's slots: who holds each, when it was last used, and this
    router's calls on it now."""

    __slots__ = ("_calls", "_holder", "_used", "count")

    def __init__(self, count: int) -> None:
        self.count = max(1, min(count, MAX_SLOTS))
        self._holder: list[int | None] = [None] * self.count
        self._used = [0.0] * self.count
        self._calls = [0] * self.count

    def take(self, key: int, now: float) -> tuple[int | None, bool]:
        """The slot for a call of conversation ``key``, busy until ``done``, and whether
        the conversation was given it now (rather than holding it already); None when
        it holds none and every slot has a call on it."""
        slot = self.slot_of(key)
        fresh = slot is None
        if slot is None:
            idle = [s for s in range(self.count) if not self._calls[s]]
            if not idle:
                return None, False
            slot = min(idle, key=self._used.__getitem__)
            self.give(slot, key, now)
        self._used[slot] = now
        self._calls[slot] += 1
        return slot, fresh

    def done(self, slot: int) -> None:
        if 0 <= slot < self.count and self._calls[slot] > 0:
            self._calls[slot] -= 1

    def give(self, slot: int, key: int, now: float) -> None:
        """Conversation ``key`` holds ``slot`` from now (here, or as another router
        replica placed it)."""
        if not 0 <= slot < self.count:
            return
        previous = self.slot_of(key)
        if previous is not None:
            self._holder[previous] = None
        self._holder[slot] = key
        self._used[slot] = max(self._used[slot], now)

    def slot_of(self, key: int) -> int | None:
        """The slot conversation ``key`` holds (a scan: a server has a handful)."""
        try:
            return self._holder.index(key)
        except ValueError:
            return None


def with_slot(data: bytes, slot: int | None) -> bytes:
    """A JSON object body naming llama.cpp's slot ``slot`` (unchanged for None)."""
    if slot is None or data[:1] != b"{" or data[1:2] == b"}":
        return data
    return b'{"id_slot":%d,' % slot + data[1:]
