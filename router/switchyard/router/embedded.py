"""The embedded default's routing table and dev API key, kept in a state directory."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import yaml

from switchyard.router.contract import API_VERSION, KIND
from switchyard.router.local_model import CAPABILITIES, CONTEXT_WINDOW, MODEL_ALIAS


def dev_key(state: Path) -> str:
    """The dev API key: made once, then reused, readable only by its owner."""
    path = state / "dev-api-key"
    if path.exists():
        return path.read_text().strip()
    key = f"sy-dev-{secrets.token_urlsafe(24)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def write_table(state: Path, key: str, model_port: int) -> Path:
    table = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "providers": [
            {
                "name": "local",
                "providerType": "vllm",
                "baseUrl": f"http://127.0.0.1:{model_port}/v1",
                "priority": 10,
                "isDefault": True,
            }
        ],
        "models": [
            {
                "name": "smollm2",
                "provider": "local",
                "modelName": MODEL_ALIAS,
                "displayName": "SmolLM2 135M Instruct (llama.cpp, on this machine)",
                "contextWindow": CONTEXT_WINDOW,
                "maxOutputTokens": 2048,
                "inputPricePer1MTokens": "0",
                "outputPricePer1MTokens": "0",
                "bestFor": ["documentation", "general"],
                **CAPABILITIES,
            }
        ],
        "templates": [
            {
                "name": "summarize",
                "description": "Summarize a text in a given number of sentences.",
                "taskType": "documentation",
                "template": "Summarize the following in {{sentences}} sentences:\n\n{{text}}",
                "variables": ["sentences", "text"],
            }
        ],
        "apiKeys": [
            {
                "name": "dev",
                "sha256": hashlib.sha256(key.encode()).hexdigest(),
                "organization": "default",
                "scopes": ["completion", "usage:read", "settings:write"],
            }
        ],
    }
    path = state / "routing-table.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(table, sort_keys=False))
    os.replace(tmp, path)
    return path
