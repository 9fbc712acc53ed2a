"""Which namespaces the operator serves: every one, or those it is given."""

from __future__ import annotations

import pytest

from switchyard.operator.config import OperatorConfig


@pytest.mark.parametrize(
    ("value", "watched"),
    [
        ("", ()),
        ("team-a", ("team-a",)),
        (" switchyard, team-a,,team-a ", ("switchyard", "team-a")),
    ],
)
def test_watched_namespaces_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, watched: tuple[str, ...]
) -> None:
    monkeypatch.setenv("SWITCHYARD_WATCH_NAMESPACES", value)
    assert OperatorConfig.from_env().watch_namespaces == watched
