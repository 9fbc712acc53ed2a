"""The README's first command: `switchyard up` prints a key and a curl that work."""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import free_port


def test_up_serves_the_printed_curl(tmp_path: Path) -> None:
    port, model_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard.cli",
            "up",
            "--port",
            str(port),
            "--model-port",
            str(model_port),
            "--admin-port",
            str(free_port()),
            "--state-dir",
            str(tmp_path / "state"),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed = ""
        deadline = time.monotonic() + 90
        while "Ctrl-C stops both" not in printed:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, printed
            printed += line
            assert time.monotonic() < deadline, printed
        key = re.search(r"dev API key:\s+(\S+)", printed)
        assert key is not None
        assert (tmp_path / "state" / "dev-api-key").read_text().strip() == key.group(1)
        assert oct((tmp_path / "state" / "dev-api-key").stat().st_mode & 0o777) == "0o600"
        curl = printed[printed.index("curl -s") : printed.index("or with the openai SDK")]
        command = shlex.split(curl.replace("\\\n", " "))
        assert command[0] == "curl"
        # The router may still be binding its port right after printing.
        for _ in range(50):
            result = subprocess.run(
                [*command, "--fail-with-body"], capture_output=True, text=True, timeout=60
            )
            if result.returncode != 7:  # 7: could not connect yet
                break
            time.sleep(0.1)
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"model":"smollm2"' in result.stdout and '"content":' in result.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    # The local model process went down with it.
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", model_port))
