from __future__ import annotations

import pytest

from switchyard.router.contract import Template
from switchyard.router.core.templates import render
from switchyard.router.errors import BadRequest


def t(text: str, **kw: object) -> Template:
    return Template.model_validate({"name": "t", "template": text, **kw})


def test_values_are_inserted_literally() -> None:
    tpl = t("Review {{ code }} in {{lang}}; again: {{code}}")
    nasty = r"\1 $0 {lang} {{lang}} %s \g<0>"
    out = render(tpl, {"code": nasty, "lang": "Go"})
    assert out == f"Review {nasty} in Go; again: {nasty}"


def test_missing_variables_are_named() -> None:
    with pytest.raises(BadRequest) as err:
        render(t("{{a}} {{b}} {{c}}"), {"b": "x"})
    assert "a, c" in err.value.message
    assert err.value.field == "variables.a"


def test_per_model_overrides() -> None:
    tpl = t(
        "Generic {{x}}",
        modelOverrides=[{"model": "claude", "template": "<task>{{x}}</task>"}],
    )
    assert render(tpl, {"x": "1"}, "claude") == "<task>1</task>"
    assert render(tpl, {"x": "1"}, "gpt") == "Generic 1"
    assert render(tpl, {"x": "1"}) == "Generic 1"
