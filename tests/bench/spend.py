"""What a benchmark's router spent, read from its own usage records (the SQLite file in
its state directory): all of it, and the part that went on calls that did not answer
their request (hedges that lost, stalled calls given up)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

NANO = Decimal(10) ** 9


@dataclass(frozen=True)
class Spend:
    total: Decimal
    hedged_calls: int  # lost and answered: their usage is the provider's
    cancelled_calls: int  # given up first: their usage is estimated
    hedged_cost: Decimal  # both kinds

    def line(self) -> str:
        share = 100 * self.hedged_cost / self.total if self.total else Decimal(0)
        return (
            f"hedged spend: {self.hedged_calls + self.cancelled_calls} calls that did not "
            f"answer their request ({self.hedged_calls} answered, {self.cancelled_calls} "
            f"given up, estimated), ${self.hedged_cost:,.4f} of ${self.total:,.4f} spent "
            f"({share:.2f}%)"
        )


def spend(state_dir: Path) -> Spend:
    with sqlite3.connect(state_dir / "switchyard.db") as db:
        rows = db.execute(
            "SELECT status, count(*), coalesce(sum(total_cost), 0) FROM llm_requests "
            "GROUP BY status"
        ).fetchall()
    by = {status: (int(n), Decimal(cost) / NANO) for status, n, cost in rows}
    total = sum((cost for _, cost in by.values()), Decimal(0))
    hedged, cancelled = by.get("hedged", (0, Decimal(0))), by.get("cancelled", (0, Decimal(0)))
    return Spend(total, hedged[0], cancelled[0], hedged[1] + cancelled[1])
