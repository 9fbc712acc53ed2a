"""The router's commands: ``router``, ``up``, ``check``, ``new-key`` and ``local-model``."""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from switchyard.cli import setup_logging
from switchyard.router.errors import ConfigError
from switchyard.router.kube.errors import KubeConfigError
from switchyard.router.tracing import TraceConfig


def _serve(
    app: object, host: str, port: int, log_level: str, args: argparse.Namespace, **kw: int
) -> None:
    """Serve ``app`` on the API port and the admin port (``http.ops``)."""
    import uvicorn

    from switchyard.router.server import ServerLimits, config, listen

    limits = ServerLimits(
        max_connections=args.max_connections,
        max_header_bytes=args.max_header_bytes,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )
    sockets = [listen(host, port), listen(_admin_host(args), args.admin_port)]
    cfg = config(app, host, port, limits=limits, log_level=log_level, **kw)
    uvicorn.Server(cfg).run(sockets=sockets)


def _admin_host(args: argparse.Namespace) -> str:
    return str(args.admin_host or args.host)


def cmd_router(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    if args.workers < 1:
        print("switchyard: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.worker_of is not None:
        index, sockets = _inherited(args.worker_of)
        _worker(args, index, sockets)
        return 0
    if args.workers > 1:
        return _supervise(args)
    app = _make_app(args, worker=None)
    if isinstance(app, int):
        return app
    _tune_gc()
    _serve(app, args.host, args.port, args.log_level, args, shutdown_timeout=args.shutdown_timeout)
    return 0


def _make_app(args: argparse.Namespace, worker: int | None) -> Any:
    """The router's app, or the exit status when its table or cluster is unusable. A
    worker (``--workers``) keeps its own spool file and 1/N of each provider's local
    rate budget."""
    from switchyard.router.app import create_app

    state = Path(args.state_dir).expanduser()
    spool = "usage-spool.jsonl" if worker is None else f"usage-spool-{worker}.jsonl"
    try:
        return create_app(
            args.config,
            routing_configmap=args.routing_configmap,
            provider_keys_dir=args.provider_keys_dir,
            provider_keys_secret=args.provider_keys_secret,
            kubeconfig=args.kubeconfig,
            reload_interval=args.reload_interval,
            database_url=args.database_url,
            sqlite_path=state / "switchyard.db",
            spool_path=state / spool,
            record_usage=not args.no_usage,
            redis_url=args.redis_url,
            usage_record_days=args.usage_record_days,
            processes=args.workers,
            admin_port=args.admin_port,
            tracing=TraceConfig.from_env(args.otlp_endpoint, args.trace_sample),
        )
    except (ConfigError, ValueError) as exc:
        print(f"switchyard: the routing table is invalid: {exc}", file=sys.stderr)
        return 2
    except KubeConfigError as exc:
        print(f"switchyard: cannot reach the cluster: {exc}", file=sys.stderr)
        return 2


def _worker(args: argparse.Namespace, index: int, sockets: list[Any]) -> None:
    """One of ``--workers`` processes: its own app, serving the sockets the supervisor
    bound."""
    import uvicorn

    from switchyard.router.server import ServerLimits, config

    app = _make_app(args, worker=index)
    if isinstance(app, int):
        sys.exit(app)
    _tune_gc()
    limits = ServerLimits(
        max_connections=args.max_connections,
        max_header_bytes=args.max_header_bytes,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )
    cfg = config(
        app,
        args.host,
        args.port,
        limits=limits,
        log_level=args.log_level,
        shutdown_timeout=args.shutdown_timeout,
    )
    uvicorn.Server(cfg).run(sockets=sockets)


#: The hidden option a supervisor starts each worker with: its index, and the file
#: descriptors of the API and admin sockets it inherits.
_WORKER_OF = "--worker-of"


def _inherited(spec: str) -> tuple[int, list[Any]]:
    """A worker's index and listening sockets, from ``--worker-of INDEX:FD:FD``."""
    import socket

    index, *fds = (int(part) for part in spec.split(":"))
    return index, [socket.socket(fileno=fd) for fd in fds]


def _supervise(args: argparse.Namespace) -> int:
    """``--workers N``: bind once, run N worker processes on the one socket (the kernel
    spreads connections among them), start a worker again if one dies, and pass
    SIGTERM and SIGINT on so that each drains as a single router does.

    A worker is this command again (``--worker-of``) with the sockets passed as file
    descriptors: a plain child, so no multiprocessing resource tracker runs beside them.
    """
    import signal

    from prometheus_client.multiprocess import mark_process_dead

    from switchyard.router.server import listen

    # Both ports are the workers' in common: a scrape of /metrics reaches one of them,
    # which answers for all (their series are in files here; see metrics.py).
    sockets = [listen(args.host, args.port), listen(_admin_host(args), args.admin_port)]
    fds = [sock.fileno() for sock in sockets]
    series = _shared_metrics(Path(args.state_dir).expanduser() / "metrics")
    stopping = False
    command = [sys.executable, "-m", "switchyard.cli", *args.argv]

    def start(index: int) -> subprocess.Popen[bytes]:
        spec = ":".join(str(n) for n in (index, *fds))
        return subprocess.Popen([*command, _WORKER_OF, spec], pass_fds=fds)

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signum)

    workers = [start(i) for i in range(args.workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"switchyard: {args.workers} router workers on {args.host}:{args.port}", file=sys.stderr)
    status = 0
    while workers:
        time.sleep(0.5)
        for i, proc in enumerate(list(workers)):
            code = proc.poll()
            if code is None:
                continue
            # Its gauges no longer count; its counters do.
            mark_process_dead(proc.pid, str(series))  # type: ignore[no-untyped-call]
            if stopping:
                workers.remove(proc)
            elif code == 2:  # the table or the cluster: starting again won't help
                stopping, status = True, 2
                stop(signal.SIGTERM, None)
                workers.remove(proc)
            else:
                print(f"switchyard: worker {i} exited ({code}); starting it again",
                      file=sys.stderr)  # fmt: skip
                workers[i] = start(i)
    for sock in sockets:
        sock.close()
    shutil.rmtree(series, ignore_errors=True)
    return status


def _shared_metrics(path: Path) -> Path:
    """An empty directory where every worker writes its series (``PROMETHEUS_MULTIPROC_DIR``,
    which the workers inherit): a scrape of any of them answers for all."""
    from switchyard.router.metrics import MULTIPROC_DIR

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_DIR] = str(path)
    return path


def _tune_gc() -> None:
    """Move start-up objects out of the collector's way and collect young objects less often.

    A request allocates many short-lived containers; with the default
    threshold the cyclic collector runs every few requests and its pauses show
    up as tail latency.
    """
    gc.collect()
    gc.freeze()
    if os.environ.get("SY_GC", "1") == "1":
        gc.set_threshold(20_000, 50, 100)


def cmd_check(args: argparse.Namespace) -> int:
    from switchyard.router.contract import networks, url_refusal
    from switchyard.router.table.source import read_path

    try:
        table, checksum = read_path(args.config)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    print(
        f"ok: {len(table.providers)} providers, {len(table.models)} models, "
        f"{len(table.templates)} templates, {len(table.api_keys)} API keys (sha256 {checksum[:12]})"
    )
    # The table loads, but the router will not use a provider the address policy refuses.
    allowed = networks(table.routing.provider_networks.allow_cidrs)
    refused = 0
    for i, p in enumerate(table.providers):
        reason = url_refusal(p.provider_type, p.url, allowed)
        if reason is not None:
            refused += 1
            print(f"refused: providers[{i}] ({p.name}): {reason}", file=sys.stderr)
    return 1 if refused else 0


def cmd_new_key(args: argparse.Namespace) -> int:
    key = f"sy-{secrets.token_urlsafe(32)}"
    print(f"key:    {key}\nsha256: {hashlib.sha256(key.encode()).hexdigest()}")
    return 0


def cmd_local_model(args: argparse.Namespace) -> int:
    from switchyard.router.local_model import LocalModelMissing, serve

    try:
        serve(args.host, args.port, threads=args.threads, parallel=args.parallel)
    except LocalModelMissing as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2
    return 0


def _wait_http(url: str, seconds: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def cmd_up(args: argparse.Namespace) -> int:
    from switchyard.router.app import create_app
    from switchyard.router.embedded import dev_key, write_table

    setup_logging(args.log_level)
    state = Path(args.state_dir).expanduser()
    state.mkdir(parents=True, exist_ok=True)
    key = dev_key(state)
    table = write_table(state, key, model_port=args.model_port)
    model = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "switchyard.router.cli",
            "local-model",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.model_port),
        ],
        stdout=subprocess.DEVNULL if not args.verbose else None,
        stderr=subprocess.DEVNULL if not args.verbose else None,
    )
    try:
        if not _wait_http(f"http://127.0.0.1:{args.model_port}/health", 60, model):
            print(
                f"switchyard: the local model did not start on port {args.model_port} "
                "(is the port taken? run with --verbose to see its log)",
                file=sys.stderr,
            )
            return 1
        app = create_app(
            table,
            database_url=args.database_url,
            sqlite_path=state / "switchyard.db",
            spool_path=state / "usage-spool.jsonl",
            admin_port=args.admin_port,
            tracing=TraceConfig.from_env(args.otlp_endpoint, args.trace_sample),
        )
        url = f"http://{args.host}:{args.port}"
        print(
            f"""
Switchyard is up: router {url}, local model smollm2 (SmolLM2-135M-Instruct, llama.cpp)
routing table: {table}
dev API key:   {key}

Try it:
  curl -s {url}/api/v1/llm/completion \\
    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
    -d '{{"taskType": "documentation", "prompt": "Say hello in five words.", "maxTokens": 32}}'

or with the openai SDK: OpenAI(base_url="{url}/v1", api_key="{key}"), model "smollm2".
Health and metrics: http://{_admin_host(args)}:{args.admin_port}/metrics (/healthz, /readyz).
Ctrl-C stops both.
""",
            flush=True,
        )
        _serve(app, args.host, args.port, args.log_level, args)
    finally:
        model.terminate()
        try:
            model.wait(10)
        except subprocess.TimeoutExpired:
            model.kill()
    return 0


def _storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        default=os.environ.get("SWITCHYARD_DATABASE_URL"),
        help="PostgreSQL URL for usage, cache and budgets (env SWITCHYARD_DATABASE_URL); "
        "without it, an SQLite file in --state-dir",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SWITCHYARD_WORKERS", "1")),
        help="router processes serving one port (env SWITCHYARD_WORKERS); share providers' "
        "budgets and breakers with --redis-url, or each takes 1/N of every rate budget",
    )
    p.add_argument(
        "--usage-record-days",
        type=int,
        default=int(os.environ.get("SWITCHYARD_USAGE_RECORD_DAYS", "0")),
        help="delete usage records older than this many days, hourly (env "
        "SWITCHYARD_USAGE_RECORD_DAYS; 0, the default: keep them all); reports and budgets "
        "read daily rollups, which stay",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("SWITCHYARD_REDIS_URL"),
        help="Redis URL (redis://host:6379/0) to share providers' rate budgets and breakers "
        "with every other router using it (env SWITCHYARD_REDIS_URL); without it, each "
        "router process keeps its own",
    )
    p.add_argument(
        "--state-dir",
        default=os.environ.get(
            "SWITCHYARD_STATE_DIR",
            os.path.join(os.environ.get("XDG_STATE_HOME", "~/.local/state"), "switchyard"),
        ),
        help="where the SQLite file and the usage spool live",
    )
    p.add_argument(
        "--no-usage",
        action="store_true",
        help="keep no usage records (budgets then count only what this process spends)",
    )


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _trace_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracing")
    g.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("SWITCHYARD_OTLP_ENDPOINT"),
        help="export spans over OTLP/HTTP to this URL (http://collector:4318; env "
        "SWITCHYARD_OTLP_ENDPOINT, or OpenTelemetry's OTEL_EXPORTER_OTLP_ENDPOINT); "
        "without either, nothing is traced, and a client's traceparent goes on to the "
        "provider as it came",
    )
    g.add_argument(
        "--trace-sample",
        type=float,
        default=None,
        help="the share of requests traced, 0 to 1, when the client did not decide with a "
        "sampled traceparent (default: OTEL_TRACES_SAMPLER(_ARG), else 1)",
    )


def _admin_args(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument(
        "--admin-port",
        type=int,
        default=int(os.environ.get("SWITCHYARD_ADMIN_PORT", str(default))),
        help="the port of /healthz, /readyz and /metrics, which the API port does not "
        f"serve (env SWITCHYARD_ADMIN_PORT; default {default})",
    )
    p.add_argument(
        "--admin-host",
        default=os.environ.get("SWITCHYARD_ADMIN_HOST"),
        help="the admin port's address (env SWITCHYARD_ADMIN_HOST; default: --host)",
    )


def _limit_args(p: argparse.ArgumentParser) -> None:
    """What one client connection may hold (see ``switchyard.router.server``)."""
    g = p.add_argument_group("connection limits")
    g.add_argument(
        "--max-connections",
        type=_positive(int),
        default=4096,
        help="client connections held at once; beyond it: 503 and close (default 4096)",
    )
    g.add_argument(
        "--max-header-bytes",
        type=_positive(int),
        default=16 * 1024,
        help="size of a request line and headers; beyond it: 431 (default 16384)",
    )
    g.add_argument(
        "--header-timeout",
        type=_positive(float),
        default=10.0,
        help="seconds for a request's headers to arrive; then 408 (default 10)",
    )
    g.add_argument(
        "--body-timeout",
        type=_positive(float),
        default=60.0,
        help="seconds for a request's body to arrive after its headers; then 408 (default 60)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("router", help="serve completions from a routing table")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="routing table file, or a mounted ConfigMap's directory")
    src.add_argument(
        "--routing-configmap",
        metavar="NAMESPACE/NAME",
        help="follow the operator's routing ConfigMap through the Kubernetes API",
    )
    p.add_argument("--provider-keys-dir", help="the operator's provider-keys Secret, mounted here")
    p.add_argument(
        "--provider-keys-secret",
        metavar="NAMESPACE/NAME",
        help="follow the operator's provider-keys Secret through the Kubernetes API",
    )
    p.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, then in-cluster, then ~/.kube/config)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--reload-interval", type=float, default=1.0, help="seconds between checks")
    p.add_argument(
        "--shutdown-timeout",
        type=int,
        default=30,
        help="seconds to finish requests and streams in flight after SIGTERM",
    )
    _storage_args(p)
    _limit_args(p)
    _admin_args(p, 9090)
    _trace_args(p)
    p.add_argument("--log-level", default="info")
    p.add_argument(_WORKER_OF, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_router)

    p = sub.add_parser("up", help="the embedded default: a local model behind the router")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model-port", type=int, default=8014)
    _storage_args(p)
    p.add_argument(
        "--log-level", default="warning", help="the router's log level (default: warnings only)"
    )
    p.add_argument("--verbose", action="store_true", help="show the local model's log")
    _limit_args(p)
    _admin_args(p, 8081)
    _trace_args(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "check",
        help="validate a routing table and exit (1: it loads, but the address policy "
        "refuses a provider's baseUrl; 2: invalid)",
    )
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("new-key", help="make an API key and print it with its SHA-256")
    p.set_defaults(func=cmd_new_key)

    p = sub.add_parser("local-model", help="serve the bundled SmolLM2 model (OpenAI API)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8014)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parallel", type=int, default=2)
    p.set_defaults(func=cmd_local_model)

    args = parser.parse_args(argv)
    #: What a worker is started with (``--workers``): this command's own arguments.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
