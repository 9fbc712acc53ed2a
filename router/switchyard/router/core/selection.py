"""Choose the ordered candidates for one request: primary first, then fallbacks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from switchyard.router.core.catalog import OrgCatalog, Route
from switchyard.router.errors import BadRequest, NoCandidateAvailable, NotFound


@dataclass(slots=True, frozen=True)
class Need:
    """What a request needs of a model."""

    model: str | None
    task_type: str | None
    prompt_tokens: int  # estimated
    max_tokens: int | None  # as requested; None: the table's default, capped per model
    stream: bool
    tools: bool
    default_max_tokens: int = 1024

    def output_tokens(self, max_output_tokens: int) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        return min(self.default_max_tokens, max_output_tokens)


_REASONS = {
    "context": "the prompt and maxTokens do not fit the context window",
    "output": "maxTokens exceeds the model's maxOutputTokens",
    "stream": "the model does not support streaming",
    "tools": "the model does not support function calling",
    "unavailable": "the provider is unhealthy, cooling down or has no usable API key",
    "budget": "the provider is out of its requests/tokens-per-minute budget",
}


def select(org: OrgCatalog, need: Need, now: float, limit: int) -> list[Route]:
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
    skipped: Counter[str] = Counter()
    for route in base:
        m = route.model
        if need.max_tokens is not None and need.max_tokens > m.max_output_tokens:
            skipped["output"] += 1
            continue
        total = need.prompt_tokens + need.output_tokens(m.max_output_tokens)
        if total > m.context_window:
            skipped["context"] += 1
            continue
        if need.stream and not m.supports_streaming:
            skipped["stream"] += 1
            continue
        if need.tools and not m.supports_function_calling:
            skipped["tools"] += 1
            continue
        state = route.state
        if not state.usable(now):
            skipped["unavailable"] += 1
            continue
        if not state.limiter.has_budget(total, now):
            skipped["budget"] += 1
            continue
        chosen.append(route)
        if len(chosen) >= limit:
            break
    if not chosen:
        detail = "; ".join(f"{n} skipped: {_REASONS[k]}" for k, n in sorted(skipped.items()))
        if set(skipped) <= {"context", "output"}:
            raise BadRequest(f"no model can take this request ({detail})", field="maxTokens")
        raise NoCandidateAvailable(f"no candidate is available ({detail})")
    return chosen
