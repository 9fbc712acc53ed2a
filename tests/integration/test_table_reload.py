"""The router follows its table file: edits, the kubelet's symlink swap, bad versions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.integration.conftest import Fakes
from tests.support.servers import RouterServer, free_port
from tests.support.tables import KEY, model, provider, table

AUTH = {"Authorization": f"Bearer {KEY}"}


def models(gw: RouterServer) -> list[str]:
    return sorted(m["id"] for m in httpx.get(f"{gw.url}/v1/models", headers=AUTH).json()["data"])


def doc(fakes: Fakes, *names: str) -> dict:
    return table(
        [provider("v", "vllm", fakes.vllm.url)],
        [model(n, "v", "meta-llama/Llama-3.1-8B-Instruct") for n in names],
    )


def test_an_edited_file_is_reloaded(fakes: Fakes, tmp_path: Path) -> None:
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(doc(fakes, "a")))
    gw = RouterServer(path).start()
    try:
        assert models(gw) == ["a"]
        gw.rewrite(doc(fakes, "a", "b"))
        assert models(gw) == ["a", "b"]
    finally:
        gw.stop()


def test_a_bad_version_keeps_the_last_good_table(fakes: Fakes, tmp_path: Path) -> None:
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(doc(fakes, "a")))
    gw = RouterServer(path).start()
    try:
        bad = doc(fakes, "b")
        bad["models"][0]["contextWindow"] = "huge"
        gw.rewrite(bad)
        assert gw.services.table_error is not None
        assert "models[0].contextWindow" in gw.services.table_error
        assert models(gw) == ["a"]
        metrics = httpx.get(f"{gw.admin}/metrics").text
        assert 'switchyard_table_reloads_total{result="invalid"} 1.0' in metrics
        ready = httpx.get(f"{gw.admin}/readyz").json()
        assert "contextWindow" in ready["table"]["lastReloadError"]
        gw.rewrite(doc(fakes, "c"))
        assert models(gw) == ["c"]
        assert gw.services.table_error is None
    finally:
        gw.stop()


def test_the_kubelet_symlink_swap_is_seen(fakes: Fakes, tmp_path: Path) -> None:
    """A ConfigMap volume: file -> ..data/file, ..data -> ..<timestamp> swapped atomically."""
    mount = tmp_path / "mount"
    mount.mkdir()

    def publish(version: str, content: dict) -> None:
        target = mount / f"..{version}"
        target.mkdir()
        (target / "routing-table.yaml").write_text(yaml.safe_dump(content))
        tmp_link = mount / "..data_tmp"
        tmp_link.symlink_to(target.name)
        os.replace(tmp_link, mount / "..data")

    publish("2026_11_26_08_00_00.1", doc(fakes, "first"))
    (mount / "routing-table.yaml").symlink_to("..data/routing-table.yaml")
    gw = RouterServer(mount).start()  # a directory: the mounted ConfigMap
    try:
        assert models(gw) == ["first"]
        publish("2026_11_26_08_00_01.2", doc(fakes, "second"))
        deadline = time.monotonic() + 5
        while models(gw) != ["second"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert models(gw) == ["second"]
    finally:
        gw.stop()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchyard.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_file_stops_start_up_naming_the_field(fakes: Fakes, tmp_path: Path) -> None:
    bad = doc(fakes, "a")
    bad["providers"][0]["providerType"] = "llama"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = run_cli("router", "--config", str(path), "--port", str(free_port()))
    assert result.returncode == 2
    assert "providers[0].providerType" in result.stderr
    assert "anthropic" in result.stderr  # says what is allowed
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2 and "providers[0].providerType" in result.stderr


def test_the_router_command_serves(fakes: Fakes, tmp_path: Path) -> None:
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(doc(fakes, "a")))
    assert "ok: 1 providers, 1 models" in run_cli("check", "--config", str(path)).stdout
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "router",
            "--config",
            str(path),
            "--port",
            str(port),
            "--admin-port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    headers=AUTH,
                    json={"model": "a", "messages": [{"role": "user", "content": "hi"}]},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert r.json()["choices"][0]["message"]["content"] == "Echo: hi"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_mounted_configmap_of_parts_is_reassembled_and_followed(
    fakes: Fakes, tmp_path: Path
) -> None:
    """The operator's packed form in a projected volume: index.json and its parts."""
    import os as _os

    from switchyard.router.table import bundle

    mount = tmp_path / "mount"
    mount.mkdir()

    def publish(version: str, names: list[str]) -> None:
        d = doc(fakes, *names)
        # Models with random display names: a table gzip cannot shrink below a part.
        d["models"] += [
            {**d["models"][0], "name": f"pad-{i:05d}", "displayName": _os.urandom(40).hex()}
            for i in range(20000)
        ]
        packed = bundle.pack(d, lambda i: f"routing-part-{i}")
        assert packed.parts, "the test table must need parts"
        target = mount / f"..{version}"
        target.mkdir()
        (target / bundle.INDEX_KEY).write_text(packed.data[bundle.INDEX_KEY])
        for files in packed.parts.values():
            for key, blob in files.items():
                (target / key).write_bytes(blob)
        link = mount / "..data_tmp"
        link.symlink_to(target.name)
        _os.replace(link, mount / "..data")
        for name in [bundle.INDEX_KEY, *(k for f in packed.parts.values() for k in f)]:
            if not (mount / name).is_symlink():
                (mount / name).symlink_to(f"..data/{name}")

    publish("v1", ["first"])
    gw = RouterServer(mount).start()
    try:
        assert "first" in models(gw) and len(models(gw)) == 20001
        publish("v2", ["second"])
        deadline = time.monotonic() + 10
        while "second" not in models(gw) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "second" in models(gw), (gw.services.table_error, gw.services.table_loads)
        assert "first" not in models(gw)
    finally:
        gw.stop()
