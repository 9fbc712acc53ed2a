"""Which of a client's fields a provider of another protocol can take (``untranslated``)."""

from __future__ import annotations

from switchyard.router.contract import untranslated

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_the_same_protocol_takes_everything() -> None:
    assert (
        untranslated({"anything": 1, "thinking": {"type": "enabled"}}, "anthropic", "anthropic")
        == []
    )


def test_a_json_schema_translates_to_anthropic_but_json_mode_does_not() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    assert untranslated({"response_format": schema}, "openai", "anthropic") == []
    assert untranslated({"response_format": {"type": "json_object"}}, "openai", "anthropic") == [
        "response_format"
    ]
    assert untranslated({"response_format": {"type": "json_object"}}, "openai", "ollama") == []


def test_output_config_translates_only_as_a_format() -> None:
    fmt = {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert untranslated({"output_config": fmt}, "anthropic", "openai") == []
    assert untranslated({"output_config": fmt}, "anthropic", "ollama") == []
    assert untranslated({"output_config": {**fmt, "effort": "low"}}, "anthropic", "openai") == [
        "output_config"
    ]


def test_fields_that_ask_for_nothing_pass_anywhere() -> None:
    asks_nothing = {"store": False, "logprobs": False, "n": 1, "parallel_tool_calls": True}
    assert untranslated(asks_nothing | {"seed": None}, "openai", "anthropic") == []
    assert untranslated({"thread": False}, "anthropic", "ollama") == []
    asks = {"store": True, "logprobs": True, "n": 2, "parallel_tool_calls": False}
    assert untranslated(asks, "openai", "ollama") == list(asks)
    assert untranslated({"parallel_tool_calls": False}, "openai", "anthropic") == []
