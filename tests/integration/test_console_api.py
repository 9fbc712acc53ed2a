"""The console's page and endpoints over plain HTTP: what the browser tests do not try.
Bad parameters are 400s naming them, keys are checked like the usage API's, the page
may load nothing from elsewhere, and nothing outside its assets is served."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Factory
from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer
from tests.support.tables import KEY, OTHER_ORG_KEY, READONLY_KEY, model, provider, table


@pytest.fixture
def console(fakes: Fakes, router: Factory) -> RouterServer:
    return router(
        table(
            [provider("openai", "openai", fakes.openai.url, key_env="SY_TEST_OPENAI_KEY")],
            [model("gpt", "openai", "gpt-4o-mini")],
        )
    )


def _get(server: RouterServer, path: str, key: str | None = READONLY_KEY, **params: str
         ) -> httpx.Response:  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(server.url + path, params=params, headers=headers)


def test_the_page_loads_only_the_routers_own_assets(console: RouterServer) -> None:
    page = _get(console, "/console", key=None)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for name, kind in [("console.js", "text/javascript"), ("console.css", "text/css")]:
        r = _get(console, f"/console/assets/{name}", key=None)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        # No address but SVG's namespace name, which is never fetched.
        text = r.text.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    for name in ["../console.py", "index.html.bak", "..%2Fconsole.py"]:
        r = _get(console, f"/console/assets/{name}", key=None)
        assert r.status_code == 404, name


@pytest.mark.parametrize(
    "path", ["/console/api/usage", "/console/api/health", "/console/api/requests"]
)
def test_the_data_needs_a_key_that_may_read_usage(console: RouterServer, path: str) -> None:
    assert _get(console, path, key=None).status_code == 401
    assert _get(console, path, key="sy-wrong").status_code == 401
    # OTHER_ORG_KEY has completion and settings:write, not usage:read.
    refused = _get(console, path, key=OTHER_ORG_KEY)
    assert refused.status_code == 403 and "usage:read" in refused.json()["error"]["message"]
    ok = _get(console, path)
    assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
    assert ok.json()["organization"] == "default"
    assert _get(console, path, key=KEY).status_code == 200


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"by": "organization"}, "by"),
        ({"period": "hour"}, "period"),
        ({"groupBy": "model"}, "groupBy"),
        ({"startDate": "yesterday"}, "startDate"),
        ({"startDate": "2026-02-01", "endDate": "2026-01-01"}, "endDate"),
        ({"startDate": "2000-01-01", "endDate": "2009-12-31", "period": "day"}, "period"),
    ],
)
def test_bad_parameters_are_named(
    console: RouterServer, params: dict[str, str], field: str
) -> None:
    r = _get(console, "/console/api/usage", **params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field


def test_a_plot_shows_every_period_of_its_range(console: RouterServer) -> None:
    r = _get(console, "/console/api/usage", startDate="2026-01-01", endDate="2026-12-31")
    body = r.json()
    assert body["period"] == "week"  # a year is plotted per week unless asked
    assert body["series"]["periods"][0] == "2025-12-29"  # the Monday of its first week
    assert len(body["series"]["periods"]) == 53
    per_month = _get(console, "/console/api/usage", startDate="2026-01-01",
                     endDate="2026-12-31", period="month").json()  # fmt: skip
    assert len(per_month["series"]["periods"]) == 12
