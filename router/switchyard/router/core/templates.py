"""Prompt templates: ``{{variable}}`` placeholders, filled literally.

Values are spliced between the template's literal parts; nothing in a value is
ever interpreted (no regex replacement strings, no format specs, no second pass).
"""

from __future__ import annotations

from switchyard.router.contract import PLACEHOLDER, Template, placeholders
from switchyard.router.errors import BadRequest


def template_text(template: Template, model: str | None) -> str:
    if model is not None:
        for override in template.model_overrides:
            if override.model == model:
                return override.template
    return template.template


def variables_of(template: Template) -> list[str]:
    if template.variables is not None:
        return list(template.variables)
    seen: dict[str, None] = {}
    for text in [template.template] + [o.template for o in template.model_overrides]:
        seen.update(dict.fromkeys(placeholders(text)))
    return list(seen)


def render(template: Template, variables: dict[str, str], model: str | None = None) -> str:
    text = template_text(template, model)
    parts = PLACEHOLDER.split(text)  # literal, name, literal, name, ..., literal
    names = parts[1::2]
    missing = sorted({n for n in names if n not in variables})
    if missing:
        raise BadRequest(
            f"template {template.name!r} needs variables that were not given: "
            + ", ".join(missing),
            field=f"variables.{missing[0]}",
        )
    out: list[str] = []
    for i, part in enumerate(parts):
        out.append(variables[part] if i % 2 else part)
    return "".join(out)
