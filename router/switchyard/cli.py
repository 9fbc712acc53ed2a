"""``switchyard``: one command for both halves, each imported only when its command runs.

The data plane (``switchyard.router``) and the control plane (``switchyard.operator``)
keep their own command lines; this module only knows which half owns which command, so
``switchyard router`` never imports kopf and ``switchyard operator`` never imports the
router's serving code.
"""

from __future__ import annotations

import importlib
import logging
import sys

#: command -> (the module whose ``main(argv)`` runs it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "router": ("switchyard.router.cli", "serve completions from a routing table"),
    "up": ("switchyard.router.cli", "the embedded default: a local model behind the router"),
    "check": ("switchyard.router.cli", "validate a routing table and exit"),
    "new-key": ("switchyard.router.cli", "make an API key and print it with its SHA-256"),
    "local-model": ("switchyard.router.cli", "serve the bundled SmolLM2 model (OpenAI API)"),
    "operator": ("switchyard.operator.cli", "run the Kubernetes operator (kopf)"),
    "create-api-key": (
        "switchyard.operator.cli",
        "create an API key Secret in a cluster and print the key once",
    ),
}

#: What to install when a half's extra dependencies are missing.
_EXTRAS = {"kopf": "switchyard[operator]", "xllamacpp": "switchyard[local]"}


#: Libraries whose routine lines (one per Kubernetes API request) would drown ours.
_QUIET = ("httpx2", "httpcore2", "httpx", "httpcore")


def setup_logging(level: str) -> None:
    """The log format and level both halves use."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: switchyard COMMAND [options]\n\n"
        "A Kubernetes-native gateway to large language models.\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n'switchyard COMMAND --help' describes a command's options."
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"switchyard: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        code: int = importlib.import_module(entry[0]).main(args)
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"switchyard {args[0]}: needs {exc.name}; install {extra!r}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
