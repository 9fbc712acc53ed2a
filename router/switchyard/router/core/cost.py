"""Cost of a completion in USD, from usage and per-million-token prices. Decimal only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from switchyard.router.core.catalog import Route
from switchyard.router.core.chat import Usage

_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal("0.000000001")  # nano-dollars: below any real price step


@dataclass(frozen=True, slots=True)
class Cost:
    input: Decimal
    output: Decimal

    @property
    def total(self) -> Decimal:
        return self.input + self.output

    def as_json(self) -> dict[str, str]:
        """Decimal strings: JSON numbers would round-trip through binary floats."""
        return {"input": _s(self.input), "output": _s(self.output), "total": _s(self.total)}


def _s(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return text


ZERO = Cost(Decimal(0), Decimal(0))


def cost_sum(costs: Iterable[Cost]) -> Cost:
    """What several calls cost together (a stream continued on another provider)."""
    total = ZERO
    for c in costs:
        total = Cost(total.input + c.input, total.output + c.output)
    return total


def cost_of(route: Route, usage: Usage) -> Cost:
    return Cost(
        (route.input_price * usage.prompt_tokens / _MILLION).quantize(_QUANTUM),
        (route.output_price * usage.completion_tokens / _MILLION).quantize(_QUANTUM),
    )
