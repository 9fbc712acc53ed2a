"""A newcomer's first minute: a fresh clone, ``./dev up``, and the first answer.

``./dev up`` installs only what running needs into a venv of the clone's own, prints
nothing but its own lines, and the curl it prints is answered by the local model.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_a_fresh_clone_answers_the_curl_dev_up_prints(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the repository's git history to clone")
    started = time.monotonic()
    clone = tmp_path / "switchyard"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    port, model_port, admin_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    up = ["./dev", "up", "--port", str(port), "--model-port", str(model_port)]
    proc = subprocess.Popen(
        [*up, "--admin-port", str(admin_port)],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        printed = ""
        while "Ctrl-C stops both" not in printed:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, printed
            printed += line
        curl = printed[printed.index("curl -s") : printed.index("or with the openai SDK")]
        command = shlex.split(curl.replace("\\\n", " "))
        for _ in range(100):
            result = subprocess.run(
                [*command, "--fail-with-body"], capture_output=True, text=True, timeout=60
            )
            if result.returncode != 7:  # 7: not listening yet
                break
            time.sleep(0.1)
        answered = time.monotonic() - started
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"model":"smollm2"' in result.stdout
        print(f"clone to first answer: {answered:.1f} s")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    # Only Switchyard's own lines: no installer chatter, warnings or server access logs.
    ours = re.compile(
        r"^(dev: installing what 'run' needs .*|Switchyard is up: .*|routing table: .*"
        r"|dev API key: .*|Try it:|  curl .*|    -[Hd] .*|or with the openai SDK: .*"
        r"|Health and metrics: .*"
        r"|Ctrl-C stops both\.|)$"
    )
    strangers = [line for line in printed.splitlines() if not ours.match(line)]
    assert strangers == [], printed
    # Running needs no test, lint or operator tools.
    venv = clone / ".venv" / "bin"
    assert (venv / "switchyard").exists()
    for tool in ("pytest", "mypy", "ruff", "kubectl", "kopf"):
        assert not (venv / tool).exists(), f"./dev up installed {tool}"
