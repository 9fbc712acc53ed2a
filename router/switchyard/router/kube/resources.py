"""The kinds Switchyard reads and writes, named without importing a client library."""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.router.contract import GROUP, MODEL, PROVIDER, TEMPLATE, VERSION


@dataclass(frozen=True, slots=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps")
SECRETS = Resource("", "v1", "Secret", "secrets")
EVENTS = Resource("", "v1", "Event", "events")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")
LLM_PROVIDERS = Resource(GROUP, VERSION, PROVIDER.kind, PROVIDER.plural)
LLM_MODELS = Resource(GROUP, VERSION, MODEL.kind, MODEL.plural)
PROMPT_TEMPLATES = Resource(GROUP, VERSION, TEMPLATE.kind, TEMPLATE.plural)
