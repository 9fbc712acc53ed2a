"""Choose the ordered candidates for one request: primary first, then fallbacks."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from switchyard.router.contract import PROTOCOL_OF, untranslated
from switchyard.router.core.catalog import Catalog, OrgCatalog, Route
from switchyard.router.core.chat import ChatRequest, estimate_tokens
from switchyard.router.core.embedding import EmbeddingRequest
from switchyard.router.errors import BadRequest, NoCandidateAvailable, NotFound

_MILLION = Decimal(1_000_000)
#: The request header that lets fields another protocol has no place for be dropped.
DROP_PARAMS_HEADER = "X-Switchyard-Drop-Unsupported-Params"


def output_tokens(requested: int | None, default: int, model_max: int) -> int:
    """The completion budget of one call: what was asked, else the table's default
    capped by what the model can produce."""
    return requested if requested is not None else min(default, model_max)


@dataclass(slots=True)
class Need:
    """What a request needs of a model. Made for every request, and not changed after:
    not frozen only because a frozen dataclass's ``__init__`` sets each field by a call."""

    model: str | None
    task_type: str | None
    prompt_tokens: int  # estimated
    max_tokens: int | None  # as requested; None: the table's default, capped per model
    stream: bool
    tools: bool
    #: JSON mode or a JSON schema, and token log probabilities (``wants``).
    structured: bool = False
    logprobs: bool = False
    #: An embeddings request: only embedding models, and no output.
    embedding: bool = False
    #: Images in the conversation, and whether any is a URL (Ollama takes data only).
    vision: bool = False
    image_urls: bool = False
    default_max_tokens: int = 1024
    #: Fields to forward as sent, which only a provider of ``params_protocol`` takes
    #: (unless ``drop_params``: then others are candidates and go without them).
    params: Mapping[str, Any] = field(default_factory=dict)
    params_protocol: str | None = None
    drop_params: bool = False
    #: Ask a model for what it allows when more is asked (the table's clampMaxTokens).
    clamp: bool = False
    #: Of several embedding inputs, the largest: ``prompt_tokens`` is its (each input is
    #: embedded on its own).
    largest_input: int | None = None

    def output_tokens(self, max_output_tokens: int) -> int:
        return output_tokens(self.max_tokens, self.default_max_tokens, max_output_tokens)


_REASONS = {
    "context": "the prompt and maxTokens do not fit the context window",
    "output": "maxTokens exceeds the model's maxOutputTokens",
    "stream": "the model does not support streaming",
    "kind": "the model is of the other type (modelType: chat or embedding)",
    "tools": "the model does not support function calling",
    "structured": "the model does not support structured output (supportsStructuredOutput)",
    "logprobs": "the model does not support log probabilities (supportsLogprobs)",
    "vision": "the model does not take images (supportsVision)",
    "image_url": "Ollama takes images as data, not URLs",
    "params": "the provider speaks another protocol, which has no place for some fields",
    "unavailable": "the provider is unhealthy, cooling down or has no usable API key",
    "budget": "the provider is out of its requests/tokens-per-minute budget",
    "model_out": "the model kept failing on its provider (not found, or cannot do what was "
    "asked) and is out for a while",
}


def select(
    org: OrgCatalog,
    need: Need,
    now: float,
    limit: int,
    skipped: defaultdict[str, int] | None = None,
) -> list[Route]:
    """The candidates for ``need``, in order; ``skipped`` counts those left out, by reason."""
    if need.model is not None:
        base = org.by_name.get(need.model)
        if base is None:
            if any(m.name == need.model for m in org.all_models):
                raise NoCandidateAvailable(f"model {need.model!r} is disabled")
            raise NotFound(f"model {need.model!r} does not exist", field="model")
    elif need.task_type is not None:
        base = org.by_task.get(need.task_type, org.routes)
    else:
        base = org.routes
    if not base:
        raise NoCandidateAvailable("no enabled model is configured")

    chosen: list[Route] = []
    if skipped is None:
        skipped = defaultdict(int)
    soonest = math.inf  # seconds until a skipped provider may be tried again
    for route in base:
        m = route.model
        if (m.model_type == "embedding") != need.embedding:
            skipped["kind"] += 1
            continue
        out = 0 if need.embedding else need.output_tokens(m.max_output_tokens)
        if out > m.max_output_tokens:
            if not need.clamp:
                skipped["output"] += 1
                continue
            out = m.max_output_tokens
        total = need.prompt_tokens + out
        if total > m.context_window:
            room = m.context_window - need.prompt_tokens
            if not need.clamp or room < 1:
                skipped["context"] += 1
                continue
            total = m.context_window
        if need.stream and not m.supports_streaming:
            skipped["stream"] += 1
            continue
        if need.tools and not m.supports_function_calling:
            skipped["tools"] += 1
            continue
        if need.structured and not m.supports_structured_output:
            skipped["structured"] += 1
            continue
        if need.logprobs and not m.supports_logprobs:
            skipped["logprobs"] += 1
            continue
        if need.vision and not m.supports_vision:
            skipped["vision"] += 1
            continue
        if need.image_urls and route.provider.provider_type == "ollama":
            skipped["image_url"] += 1
            continue
        if need.params and not need.drop_params and _untaken(need, route):
            skipped["params"] += 1
            continue
        state = route.state
        if not state.usable(now):
            skipped["unavailable"] += 1
            if state.key_problem is None and state.refused is None:
                soonest = min(soonest, state.breaker.ready_in(now))
            continue
        if not route.model_breaker.available(now):
            skipped["model_out"] += 1
            soonest = min(soonest, route.model_breaker.ready_in(now))
            continue
        if not state.limiter.has_budget(total, now):
            skipped["budget"] += 1
            soonest = min(soonest, state.limiter.ready_in(total, now))
            continue
        chosen.append(route)
        if len(chosen) >= limit:
            break
    if not chosen:
        detail = "; ".join(f"{n} skipped: {_REASONS[k]}" for k, n in sorted(skipped.items()))
        if set(skipped) <= _CANNOT:
            raise _cannot_serve(skipped, need, base, detail)
        raise NoCandidateAvailable(
            f"no candidate is available ({detail})",
            retry_after=soonest if soonest < math.inf else None,
        )
    return chosen


def _untaken(need: Need, route: Route) -> list[str]:
    """The request's fields ``route``'s protocol can neither take as sent nor translate."""
    return untranslated(
        need.params, need.params_protocol, PROTOCOL_OF[route.provider.provider_type]
    )


#: Why a model could never serve a request, whatever its provider's state: a client
#: error (400), which retrying cannot mend. The other reasons pass (503).
_CANNOT = {
    "kind",
    "context",
    "output",
    "stream",
    "tools",
    "structured",
    "logprobs",
    "vision",
    "image_url",
    "params",
}


def _cannot_serve(
    skipped: Mapping[str, int], need: Need, base: list[Route], detail: str
) -> BadRequest:
    """A 400 naming the request field no candidate can honour, with the limit it meets.

    Field names are the neutral ones (``max_tokens``); each surface shows its own.
    """
    if "kind" in skipped and skipped["kind"] == sum(skipped.values()):
        if need.embedding:
            return BadRequest(
                "model: no embedding model here (an LLMModel with modelType: embedding) "
                f"({detail})",
                field="model",
            )
        return BadRequest(
            "model: only embedding models here; they serve POST /v1/embeddings, not "
            f"completions ({detail})",
            field="model",
        )
    if "tools" in skipped:
        return BadRequest(
            f"tools: no model here supports function calling ({detail})", field="tools"
        )
    if "stream" in skipped:
        return BadRequest(f"stream: no model here supports streaming ({detail})", field="stream")
    if "structured" in skipped:
        name = _structured_field(need)
        return BadRequest(
            f"{name}: no model here supports structured output ({detail})", field=name
        )
    if "vision" in skipped or "image_url" in skipped:
        return BadRequest(
            f"messages: no model here can take these images ({detail})", field="messages"
        )
    if "logprobs" in skipped:
        name = "logprobs" if "logprobs" in need.params else "top_logprobs"
        return BadRequest(
            f"{name}: no model here supports log probabilities ({detail})", field=name
        )
    if "params" in skipped:
        untaken = [p for p in need.params if all(p in _untaken(need, r) for r in base)]
        name = (untaken or list(need.params))[0]
        return BadRequest(
            f"{name}: no candidate here can take {', '.join(untaken or need.params)} "
            f"(fields of the {need.params_protocol} protocol) ({detail}); "
            "to send the request without them, "
            f"set the header {DROP_PARAMS_HEADER}: true or the table's "
            "routing.dropUnsupportedParams",
            field=name,
        )
    if need.embedding:
        window = max(r.model.context_window for r in base if r.model.model_type == "embedding")
        where = "input" if need.largest_input is None else f"input[{need.largest_input}]"
        return BadRequest(
            f"{where}: about {need.prompt_tokens} tokens, more than any embedding model "
            f"here takes; the largest contextWindow is {window} ({detail})",
            field=where,
        )
    largest = max(r.model.max_output_tokens for r in base)
    if "output" in skipped and need.max_tokens is not None and need.max_tokens > largest:
        return BadRequest(
            f"max_tokens: {need.max_tokens} is more than any model here can produce; "
            f"the most is {largest} (the largest maxOutputTokens)",
            field="max_tokens",
        )
    window = max(r.model.context_window for r in base)
    return BadRequest(
        f"max_tokens: the prompt (about {need.prompt_tokens} tokens) and the output asked "
        f"for do not fit any model's context window; the largest is {window} tokens "
        f"({detail})",
        field="max_tokens",
    )


@dataclass(slots=True)
class Plan:
    """The candidates for one request, in order, and its estimated prompt tokens. Not
    changed once made (not frozen for the reason ``Need`` is not)."""

    catalog: Catalog
    routes: list[Route]
    prompt_tokens: int
    #: What the candidates were chosen for (a named model, a task type, or neither), and
    #: how many were left out, by reason: what a trace says of the choice.
    need: Need | None = None
    skipped: Mapping[str, int] | None = None

    def reason(self) -> str:
        """Why the candidates are these, in this order."""
        names = ", ".join(f"{r.provider.name}/{r.model.name}" for r in self.routes)
        rank = ", ".join(self.catalog.settings.rank_by)
        basis = _basis(self.need) if self.need is not None else ""
        text = f"{basis or 'every enabled model'}; ranked by {rank}: {names}"
        if self.skipped:
            text += "; " + "; ".join(
                f"{n} skipped: {_REASONS[k]}" for k, n in sorted(self.skipped.items())
            )
        return text

    def max_tokens(self, req: ChatRequest | None, route: Route) -> int:
        """The completion budget of a call to ``route``: what was asked (or the default),
        clamped to what the model allows and the context the prompt leaves, unless the
        table turns clamping off (then ``select`` has skipped such models). An
        embeddings request (``req`` None) produces none."""
        if req is None:
            return 0
        settings = self.catalog.settings
        m = route.model
        out = output_tokens(req.max_tokens, settings.default_max_tokens, m.max_output_tokens)
        if settings.clamp_max_tokens:
            out = min(out, m.max_output_tokens, m.context_window - self.prompt_tokens)
        return out

    def estimated_cost(self, req: ChatRequest | None, route: Route | None = None) -> Decimal:
        """The most a call to ``route`` (the primary candidate by default) could charge
        for this request, in USD."""
        route = route or self.routes[0]
        out = self.max_tokens(req, route)
        return (route.input_price * self.prompt_tokens + route.output_price * out) / _MILLION


def wants(params: Mapping[str, Any], protocol: str | None) -> tuple[bool, bool]:
    """Whether a request's fields ask for structured output, and for log probabilities."""
    if not params:
        return False, False
    if protocol == "openai":
        fmt = params.get("response_format")
        structured = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
        logprobs = params.get("logprobs") is True or bool(params.get("top_logprobs"))
        return structured, logprobs
    if protocol == "anthropic":
        config = params.get("output_config")
        return isinstance(config, dict) and config.get("format") is not None, False
    return False, False


def _structured_field(need: Need) -> str:
    return "output_config.format" if need.params_protocol == "anthropic" else "response_format"


def plan(catalog: Catalog, organization: str, req: ChatRequest, now: float) -> Plan:
    """Choose the candidates for ``req``; raises when none fits."""
    prompt_tokens = estimate_tokens(req.text_size())
    structured, logprobs = wants(req.params, req.params_protocol)
    images = [i for m in req.messages for i in m.images]
    needs = not req.count_only  # a count needs nothing of the model beyond its window
    need = Need(
        model=req.model,
        task_type=req.task_type,
        prompt_tokens=prompt_tokens,
        max_tokens=req.max_tokens,
        stream=req.stream and needs,
        tools=bool(req.tools) and req.tool_choice != "none" and needs,
        structured=structured and needs,
        logprobs=logprobs and needs,
        vision=bool(images) and needs,
        image_urls=any(i.url for i in images) and needs,
        default_max_tokens=catalog.settings.default_max_tokens,
        params=req.asked(),
        params_protocol=req.params_protocol,
        drop_params=req.drop_params or req.count_only or catalog.settings.drop_unsupported_params,
        clamp=catalog.settings.clamp_max_tokens,
    )
    # A defaultdict, made in C: a Counter's construction is two calls in Python.
    skipped: defaultdict[str, int] = defaultdict(int)
    routes = select(catalog.org(organization), need, now, catalog.settings.max_attempts, skipped)
    return Plan(catalog, routes, prompt_tokens, need, skipped)


#: The embedding fields Ollama has a place for (``user`` is not sent, as for chat).
EMBEDDING_TRANSLATED = frozenset({"encoding_format", "dimensions", "user"})


def plan_embedding(catalog: Catalog, organization: str, req: EmbeddingRequest, now: float) -> Plan:
    """Choose the embedding models for ``req``; raises when none fits. Each input must
    fit a model's context window; what they cost together is the plan's."""
    sizes = req.sizes()
    largest = max(range(len(sizes)), key=sizes.__getitem__)
    # What only OpenAI's protocol takes: fields beyond those Ollama has a place for, and
    # token ids as input.
    others = {k: v for k, v in req.params.items() if k not in EMBEDDING_TRANSLATED}
    if req.texts is None:
        others["input"] = req.input
    need = Need(
        model=req.model,
        task_type=req.task_type,
        prompt_tokens=estimate_tokens(sizes[largest]),
        max_tokens=None,
        stream=False,
        tools=False,
        embedding=True,
        params=others,
        params_protocol="openai",
        largest_input=largest if len(sizes) > 1 else None,
    )
    skipped: defaultdict[str, int] = defaultdict(int)
    routes = select(catalog.org(organization), need, now, catalog.settings.max_attempts, skipped)
    return Plan(catalog, routes, estimate_tokens(sum(sizes)), need, skipped)


def _basis(need: Need) -> str:
    if need.model is not None:
        return f"model {need.model!r} named"
    if need.task_type is not None:
        return f"task type {need.task_type!r}"
    return ""
