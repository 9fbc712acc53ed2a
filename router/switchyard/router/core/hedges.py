"""The calls a request makes that do not answer it, and what they cost.

A hedge (``core.stall``) asks a second candidate while the first keeps running; both
providers bill, whichever wins. So every such call is paid for like the one that
answered: a budget holds its estimate before it is sent (a request whose budgets cannot
cover a second call is not hedged), and each call that loses becomes a usage record of
its own, ``hedged`` with the tokens its provider reported when it answered, or
``cancelled`` with an estimate (marked ``usage_estimated``) when it was given up first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from switchyard.router.core.budgets import Reservation
from switchyard.router.core.catalog import Route
from switchyard.router.core.chat import Usage

#: A losing call that answered (its usage is the provider's), or was given up first.
Outcome = Literal["hedged", "cancelled"]
#: The error class that marks a record whose tokens are an estimate.
ESTIMATED = "usage_estimated"


@dataclass(slots=True, frozen=True)
class Loser:
    """A call a request made that did not answer it."""

    route: Route
    outcome: Outcome
    usage: Usage  # the provider's when it answered, else estimated
    hold: Reservation | None  # what a budget held for it, settled by its record
    stream: bool


class Hedges(Protocol):
    """What one request's failover needs to pay for its losing calls."""

    async def reserve(self, route: Route, max_tokens: int) -> Reservation | None:
        """Hold a hedge's estimated cost against the request's budgets before it is
        sent; None when they cannot cover it (then it is not sent)."""

    def release(self, hold: Reservation) -> None:
        """Give back a hold whose call was never sent."""

    def lost(self, loser: Loser) -> None:
        """Record a losing call: metrics, a usage record, its hold settled."""
