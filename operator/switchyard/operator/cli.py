"""The control plane's commands: ``operator`` and ``create-api-key``."""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys

from switchyard.cli import setup_logging
from switchyard.router.contract import API_KEY_LABEL, SCOPES


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the kopf operator: cluster-wide (a namespace is an organization), or in the
    namespaces given only."""
    setup_logging(args.log_level)
    if args.namespace:
        os.environ["SWITCHYARD_NAMESPACE"] = args.namespace
    if args.watch_namespace:
        os.environ["SWITCHYARD_WATCH_NAMESPACES"] = ",".join(args.watch_namespace)
    import kopf

    from switchyard.operator import main as handlers  # registers the handlers
    from switchyard.operator.config import OperatorConfig
    from switchyard.router.kube.config import load
    from switchyard.router.kube.errors import KubeConfigError

    try:
        handlers.configure(load(args.kubeconfig))
    except KubeConfigError as exc:
        print(f"switchyard operator: {exc}", file=sys.stderr)
        return 2

    watched = OperatorConfig.from_env().watch_namespaces
    kopf.run(
        standalone=True,
        clusterwide=not watched,
        namespaces=watched,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz"
        if args.health_port
        else None,
    )
    return 0


def cmd_create_api_key(args: argparse.Namespace) -> int:
    """Create an API key as a labelled Secret and print the key, once."""
    import asyncio

    from switchyard.router.kube.client import KubeClient
    from switchyard.router.kube.config import load
    from switchyard.router.kube.errors import KubeConfigError, KubeError
    from switchyard.router.kube.resources import SECRETS

    key = f"sy-{secrets.token_urlsafe(32)}"
    scopes = ",".join(args.scopes)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": args.name,
            "namespace": args.namespace,
            "labels": {API_KEY_LABEL: "true"},
        },
        "stringData": {"sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": scopes},
    }

    async def create() -> None:
        client = KubeClient(load(args.kubeconfig))
        try:
            await client.create(SECRETS, body)
        finally:
            await client.close()

    try:
        asyncio.run(create())
    except (KubeError, KubeConfigError) as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 1
    print(f"API key {args.namespace}/{args.name} ({scopes}); shown only now:\n{key}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    kubeconfig_help = "kubeconfig file (default: $KUBECONFIG, then in-cluster, then ~/.kube/config)"

    p = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    p.add_argument("--namespace", help="where to publish the routing table (default switchyard)")
    p.add_argument(
        "--watch-namespace",
        action="append",
        metavar="NAMESPACE",
        help="serve this organization's namespace only (repeat for more; env "
        "SWITCHYARD_WATCH_NAMESPACES, comma-separated); default: every namespace, which "
        "needs cluster-wide read access to Secrets",
    )
    p.add_argument("--kubeconfig", help=kubeconfig_help)
    p.add_argument("--health-port", type=int, default=8081, help="liveness endpoint; 0 for none")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser("create-api-key", help="create an API key Secret and print the key once")
    p.add_argument("--namespace", required=True, help="the organization")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--scopes",
        nargs="+",
        default=["completion"],
        choices=SCOPES,
    )
    p.add_argument("--kubeconfig", help=kubeconfig_help)
    p.set_defaults(func=cmd_create_api_key)

    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
