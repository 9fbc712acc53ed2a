"""CI does not pass green when the tests that need a real API server or node skipped."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(
    ("env", "outcome"),
    [
        ({"SWITCHYARD_REQUIRE_ALL": "1"}, {"failed": 1}),
        ({"SWITCHYARD_REQUIRE_ALL": "1", "SWITCHYARD_SKIP_NODE": "1"}, {"skipped": 1}),
        ({}, {"skipped": 1}),
    ],
)
def test_a_node_test_that_skips_fails_ci_unless_skipped_on_purpose(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    outcome: dict[str, int],
) -> None:
    for name in ("SWITCHYARD_REQUIRE_ALL", "SWITCHYARD_SKIP_NODE", "SWITCHYARD_SKIP_KUBE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401")
    node = pytester.mkdir("node")
    (node / "test_installed.py").write_text(
        "import pytest\n\ndef test_it():\n    pytest.skip('a node needs root')\n"
    )
    elsewhere = pytester.mkdir("unit")
    (elsewhere / "test_other.py").write_text(
        "import pytest\n\ndef test_it():\n    pytest.skip('fine to skip')\n"
    )
    result = pytester.runpytest_inprocess("node")
    result.assert_outcomes(**outcome)
    if "failed" in outcome:
        result.stdout.fnmatch_lines(["*every node test must run here*a node needs root*"])
    pytester.runpytest_inprocess("unit").assert_outcomes(skipped=1)
