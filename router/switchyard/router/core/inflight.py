"""How many completions each API key has open, capped per key.

One key must not hold all of a router's capacity (its connections to providers, its
memory, its event loop) while its organization's other keys wait. A request takes a
slot once its key is known and gives it back when its answer is finished: the last
byte of a stream, or an error, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Callable

from switchyard.router.core.caller import Caller
from switchyard.router.errors import TooManyInFlight


class Slot:
    """One request's place; ``release`` is safe to call more than once."""

    __slots__ = ("_counts", "_key", "_then")

    def __init__(self, counts: dict[tuple[str, str], int] | None, key: tuple[str, str]) -> None:
        self._counts = counts
        self._key = key
        self._then: list[Callable[[], None]] | None = None

    def also(self, release: Callable[[], None]) -> None:
        """Release something else the request holds (memory it leased) with the slot."""
        if self._then is None:
            self._then = []
        self._then.append(release)

    def release(self) -> None:
        counts = self._counts
        if counts is None:
            return
        self._counts = None
        if self._then is not None:
            for then in self._then:
                then()
            self._then = None
        left = counts[self._key] - 1
        if left:
            counts[self._key] = left
        else:
            del counts[self._key]


class InFlight:
    """Open requests by (organization, key name); one event loop, so no locks."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}

    def acquire(self, caller: Caller, limit: int) -> Slot:
        """A slot for ``caller``, or ``TooManyInFlight``; ``limit`` 0 means no limit."""
        key = (caller.organization, caller.key_name)
        held = self._counts.get(key, 0)
        if limit and held >= limit:
            raise TooManyInFlight(
                f"API key {caller.key_name!r} already has {held} requests in flight, "
                f"its limit (routing.maxInFlightPerKey); retry when one finishes"
            )
        self._counts[key] = held + 1
        return Slot(self._counts, key)

    def held(self, caller: Caller) -> int:
        return self._counts.get((caller.organization, caller.key_name), 0)
