"""Where the router's time goes: a sampling profile (py-spy) of one router under wrk, by
layer and by function.

    ./dev bench profile [--load non-streaming|stream|anthropic] [--duration 10] [--top 25]
                        [--floor | --against REF]

One router (default store, usage on) in front of the fast fake upstream, loaded at 32
connections as ``./dev bench router`` loads it; py-spy samples the router's Python
stacks at 250 Hz for the duration. Printed:

- **by layer**: each sample's innermost Python frame, grouped by package (the HTTP
  server, the HTTP client, the web framework, validation, metrics, the event loop) and,
  for Switchyard's own code, by sub-package (``http``, ``core``, ``protocols``, ...).
  C code (uvloop, httptools, orjson) counts for the Python frame that called it.
- **self**: the functions most often innermost.
- **cumulative**: the functions most often anywhere on the stack (below the event loop).

``--floor`` profiles the floor (``floor.py``) under the same load instead, to compare
what the same server and client cost without the router around them; ``--against REF``
profiles the router of git revision REF (a worktree in a temporary folder), to compare
the top items before and after a change.

Percentages are of the samples taken, which include the event loop's own time between
callbacks (``Runner.run``).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.bench.run_bench import (  # noqa: E402
    KEY,
    MESSAGES_STREAM,
    NONSTREAM,
    STREAM,
    fake_upstream,
    free_port,
    missing_tool,
    ready_url,
    remove_worktree,
    revision_router,
    router_process,
    wait_http,
    wait_until_listening,
    write_table,
    wrk,
)

LOADS = {
    "non-streaming": (NONSTREAM, "/v1/chat/completions"),
    "stream": (STREAM, "/v1/chat/completions"),
    "anthropic": (MESSAGES_STREAM, "/v1/messages"),
}
#: Packages named as layers of their own; anything else is "stdlib/other".
PACKAGES = (
    "uvicorn",
    "aiohttp",
    "starlette",
    "pydantic",
    "prometheus_client",
    "opentelemetry",
    "multidict",
    "yarl",
    "asyncio",
)
#: py-spy names Switchyard's files from the source root: ``(router/http/body.py:50)``.
_OWN = re.compile(r"\(router/([a-z_]+)")
_LINE = re.compile(r":\d+\)$")


def layer(frame: str) -> str:
    """The layer a frame (``function (path:line)``) belongs to."""
    own = _OWN.search(frame)
    if own is not None:
        return f"switchyard.{own.group(1)}"
    for package in PACKAGES:
        if f"/{package}/" in frame or f"({package}/" in frame:
            return package
    return "stdlib/other"


def function(frame: str) -> str:
    """A frame without its line number, and with the site-packages prefix cut."""
    frame = _LINE.sub(")", frame)
    return re.sub(r"\([^()]*?(site-packages|python3\.\d+|switchyard)/", "(", frame)


def read(path: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """py-spy's raw output: its samples, and counts by innermost frame and by frame."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        # The main thread's frames down to the event loop are on every one of its stacks.
        loop = next((i for i, f in enumerate(frames) if f.startswith("Runner.run ")), -1)
        for name in {function(f) for f in frames[loop + 1 :]}:
            anywhere[name] += n
    return total, own, anywhere


def report(path: Path, top: int) -> None:
    total, own, anywhere = read(path)
    if not total:
        raise SystemExit("py-spy took no samples")
    layers: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for frame, n in own.items():
        layers[layer(frame)] += n
        functions[function(frame)] += n
    print(f"\n{total} samples\n\nby layer (innermost frame):")
    for name, n in layers.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\nself, top {top}:")
    for name, n in functions.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\ncumulative, top {top}:")
    for name, n in anywhere.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--load", choices=sorted(LOADS), default="non-streaming")
    parser.add_argument("--duration", type=int, default=10, help="seconds sampled")
    parser.add_argument("--top", type=int, default=25, help="functions listed")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--floor", action="store_true", help="profile the floor instead")
    which.add_argument("--against", metavar="REF", help="profile this git revision instead")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("bench: py-spy is needed (./dev setup installs it)", file=sys.stderr)
        return 2
    if missing_tool("wrk"):
        return 2
    body, path = LOADS[args.load]
    if args.floor and args.load == "anthropic":
        print("bench: the floor relays; it has no Anthropic surface", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="switchyard-profile-"))
    up, port = free_port(), free_port()
    upstream = fake_upstream(up)
    if args.floor:
        env = dict(os.environ, FLOOR_PORT=str(port), FLOOR_UPSTREAM=f"http://127.0.0.1:{up}")
        router = subprocess.Popen([sys.executable, str(HERE / "floor.py")], env=env)
    elif args.against:
        router = revision_router(work, args.against, write_table(work, up), port)
    else:
        router = router_process(write_table(work, up), port, "--state-dir", str(work / "state"))
    samples = work / "samples.txt"
    try:
        wait_http(f"http://127.0.0.1:{up}/health")
        if args.floor:
            wait_until_listening(port)
        else:
            wait_http(ready_url(port))
        url = f"http://127.0.0.1:{port}{path}"
        auth = None if args.floor else f"Bearer {KEY}"
        wrk(url, body, 32, 2, auth)  # warm: connections, caches, the writer
        sampler = subprocess.Popen(
            [spy, "record", "--pid", str(router.pid), "--format", "raw", "--rate", "250",
             "--duration", str(args.duration), "--nonblocking", "--output", str(samples)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.5)  # py-spy attaches
        result = wrk(url, body, 32, max(1, args.duration - 1), auth)
        _, err = sampler.communicate(timeout=args.duration + 30)
        if sampler.returncode != 0 or not samples.exists():
            print(f"bench: py-spy failed: {err.decode(errors='replace')}", file=sys.stderr)
            return 1
        errors = sum(v for k, v in result.items() if k.startswith("errors_"))
        who = "the floor" if args.floor else f"the router of {args.against or 'this tree'}"
        print(
            f"{who}, {args.load}, 32 connections: {result['rps']:.0f} requests/s, "
            f"{errors:.0f} errors, p50 {result['p50_ms']:.2f} ms"
        )
        report(samples, args.top)
    finally:
        router.terminate()
        upstream.terminate()
        router.wait(10)
        upstream.wait(10)
        if args.against:
            remove_worktree(work / "ref")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
