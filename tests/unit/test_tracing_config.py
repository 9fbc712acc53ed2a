"""Tracing's configuration: flags first, then OpenTelemetry's standard variables; and a
router that does not trace never loads the SDK."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from switchyard.router.tracing import TraceConfig


def test_off_unless_an_endpoint_is_given() -> None:
    assert TraceConfig.from_env(None, None, {}) is None
    assert TraceConfig.from_env(None, None, {"OTEL_TRACES_SAMPLER": "always_on"}) is None


def test_the_flag_and_the_standard_variables() -> None:
    c = TraceConfig.from_env("http://collector:4318", 0.25, {})
    assert c is not None
    assert (c.endpoint, c.sample_ratio, c.service_name) == (
        "http://collector:4318/v1/traces",
        0.25,
        "switchyard-router",
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example:4318/",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
        "OTEL_SERVICE_NAME": "gateway-eu",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer abc, x-tenant=platform",
    }
    c = TraceConfig.from_env(None, None, env)
    assert c is not None
    assert c.endpoint == "https://otel.example:4318/v1/traces"
    assert c.sample_ratio == 0.01
    assert c.service_name == "gateway-eu"
    assert c.headers == {"authorization": "Bearer abc", "x-tenant": "platform"}
    traces_only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/v1/traces"}
    assert TraceConfig.from_env(None, None, traces_only).endpoint == "http://t:4318/v1/traces"  # type: ignore[union-attr]
    # Turned off the standard ways, whatever else is set.
    for off in ({"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}):
        assert TraceConfig.from_env(None, None, env | off) is None
    assert (
        TraceConfig.from_env(None, None, env | {"OTEL_TRACES_SAMPLER": "always_off"}).sample_ratio
        == 0.0
    )  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("endpoint", "ratio", "message"),
    [
        ("collector:4318", None, r"http\(s\) URL"),
        ("http://c:4318", 1.5, "within 0 and 1"),
    ],
)
def test_bad_settings_are_named(endpoint: str, ratio: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TraceConfig.from_env(endpoint, ratio, {})
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        TraceConfig.from_env(
            "http://c:4318",
            None,
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"},
        )


def test_a_router_that_does_not_trace_never_imports_the_sdk(tmp_path: object) -> None:
    """The SDK and its exporter cost memory and import time: loaded only when tracing is
    on. A client's traceparent still goes on (``follow_client``) without them."""
    code = textwrap.dedent(
        """
        import sys, tempfile, pathlib
        from switchyard.router.app import create_app
        from switchyard.router.tracing import follow_client, with_trace
        d = pathlib.Path(tempfile.mkdtemp())
        (d / "t.yaml").write_text("apiVersion: switchyard.dev/v1alpha1\\nkind: RoutingTable\\n")
        create_app(d / "t.yaml", sqlite_path=d / "s.db")
        follow_client("00-" + "1" * 32 + "-" + "2" * 16 + "-01", None)
        assert with_trace({})["traceparent"].startswith("00-111")
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print(loaded)
        assert not loaded, loaded
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
