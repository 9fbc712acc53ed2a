from __future__ import annotations

from decimal import Decimal

from switchyard.router.core.catalog import compile_table
from switchyard.router.core.chat import Usage
from switchyard.router.core.cost import cost_of
from switchyard.router.table.loader import parse_document
from tests.support.tables import model, provider, table


def test_cost_is_exact_decimal() -> None:
    doc = table(
        [provider("p", "vllm", "http://x/v1")],
        [model("m", "p", inputPricePer1MTokens="0.15", outputPricePer1MTokens="0.60")],
    )
    route = compile_table(parse_document(doc), "x").org("default").routes[0]
    c = cost_of(route, Usage(prompt_tokens=1234, completion_tokens=567))
    assert c.input == Decimal("0.0001851")
    assert c.output == Decimal("0.0003402")
    assert c.total == Decimal("0.0005253")
    assert c.as_json() == {"input": "0.0001851", "output": "0.0003402", "total": "0.0005253"}
    # Sum of a million such requests is exact, unlike floats.
    assert sum((c.total for _ in range(1000)), Decimal(0)) == Decimal("0.5253")
