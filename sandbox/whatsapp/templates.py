"""Message templates of the WhatsApp Business Account, and the checks Meta applies when one is
sent: the (name, language) translation must exist and be APPROVED, and each component must get
exactly as many parameters as it has ``{{n}}`` placeholders.

Templates are the only messages allowed outside the 24-hour customer service window, which is
why the bridge needs a realistic set to fall back on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import GraphError, cloud_error, invalid_parameter, missing_parameter

PLACEHOLDER_RE = re.compile(r"\{\{\s*(\d+)\s*\}\}")
STATUSES = frozenset({"APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED", "IN_APPEAL"})
CATEGORIES = frozenset({"UTILITY", "MARKETING", "AUTHENTICATION"})


@dataclass(frozen=True)
class Template:
    """One template translation. ``body`` uses Meta's positional ``{{1}}`` placeholders."""

    name: str
    language: str
    body: str
    status: str = "APPROVED"
    category: str = "UTILITY"
    id: str = ""
    header: str | None = None  # optional TEXT header, may hold one placeholder
    footer: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"template status must be one of {sorted(STATUSES)}")
        if self.category not in CATEGORIES:
            raise ValueError(f"template category must be one of {sorted(CATEGORIES)}")

    def placeholders(self, component: str) -> int:
        text = {"body": self.body, "header": self.header or ""}.get(component, "")
        return len(set(PLACEHOLDER_RE.findall(text)))

    def render(self, parameters: dict[str, list[str]]) -> str:
        """The text the client's phone shows: header, body and footer with parameters filled."""

        def fill(text: str, values: list[str]) -> str:
            return PLACEHOLDER_RE.sub(
                lambda m: values[int(m.group(1)) - 1] if int(m.group(1)) <= len(values) else m.group(0),
                text,
            )

        parts = []
        if self.header:
            parts.append(fill(self.header, parameters.get("header", [])))
        parts.append(fill(self.body, parameters.get("body", [])))
        if self.footer:
            parts.append(self.footer)
        return "\n".join(parts)

    def to_graph(self) -> dict[str, Any]:
        """The object ``GET /{waba_id}/message_templates`` lists."""
        components: list[dict[str, Any]] = []
        if self.header:
            components.append({"type": "HEADER", "format": "TEXT", "text": self.header})
        components.append({"type": "BODY", "text": self.body})
        if self.footer:
            components.append({"type": "FOOTER", "text": self.footer})
        return {
            "name": self.name,
            "parameter_format": "POSITIONAL",
            "components": components,
            "language": self.language,
            "status": self.status,
            "category": self.category,
            "id": self.id,
        }


def default_templates() -> list[Template]:
    """Shipped unless the constructor's ``templates=`` overrides: three approved, one rejected."""
    return [
        Template(
            name="follow_up",
            language="en",
            body="Hello {{1}}, we are following up on your recent message. Reply to continue the conversation.",
            id="900000000000001",
        ),
        Template(
            name="appointment_reminder",
            language="en",
            body="Hello {{1}}, this is a reminder of your appointment on {{2}}. Reply to confirm or reschedule.",
            id="900000000000002",
        ),
        Template(
            name="conversation_reopen",
            language="en",
            body="We have an update for you. Reply to this message to continue the conversation.",
            id="900000000000003",
        ),
        Template(
            name="spring_promo",
            language="en",
            body="Hi {{1}}! Get 20% off this week only.",
            status="REJECTED",
            category="MARKETING",
            id="900000000000004",
        ),
    ]


@dataclass(frozen=True)
class TemplateSend:
    """A validated ``template`` object of a send request."""

    template: Template
    parameters: dict[str, list[str]]  # component type (lower case) -> text values

    def view(self) -> dict[str, Any]:
        return {
            "name": self.template.name,
            "language": self.template.language,
            "parameters": self.parameters.get("body", []),
            "header_parameters": self.parameters.get("header", []),
            "text": self.template.render(self.parameters),
        }


class TemplateCatalog:
    def __init__(self, templates: list[Template]) -> None:
        self.templates = list(templates)

    def list(self, name: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return [
            t.to_graph()
            for t in self.templates
            if (name is None or t.name == name) and (status is None or t.status == status.upper())
        ]

    def resolve(self, spec: Any) -> TemplateSend:
        """Check a send request's ``template`` object the way Meta does."""
        if not isinstance(spec, dict):
            raise missing_parameter("template")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise missing_parameter("template['name']")
        language = spec.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(code, str) or not code:
            raise missing_parameter("template['language']['code']")
        found = next((t for t in self.templates if t.name == name and t.language == code), None)
        if found is None or found.status in ("PENDING", "REJECTED", "IN_APPEAL"):
            raise cloud_error(132001, f"template name ({name}) does not exist in {code}")
        if found.status == "PAUSED":
            raise cloud_error(132015, f"Template {name} is paused due to low quality.")
        if found.status == "DISABLED":
            raise cloud_error(132016, f"Template {name} is disabled.")
        return TemplateSend(found, self._parameters(found, spec.get("components")))

    @staticmethod
    def _parameters(template: Template, components: Any) -> dict[str, list[str]]:
        given: dict[str, list[str]] = {}
        if components is not None:
            if not isinstance(components, list):
                raise invalid_parameter("Param template['components'] must be an array.")
            for index, component in enumerate(components):
                if not isinstance(component, dict) or not isinstance(component.get("type"), str):
                    raise invalid_parameter(f"Param template['components'][{index}]['type'] is required.")
                kind = component["type"].lower()
                values = given.setdefault(kind, [])
                for parameter in component.get("parameters") or []:
                    values.append(_parameter_text(parameter, kind))
        for kind in ("header", "body"):
            expected = template.placeholders(kind)
            got = len(given.get(kind, []))
            if got != expected:
                raise _count_mismatch(kind, got, expected)
        for kind, values in given.items():
            if kind not in ("header", "body") and values:
                # guess: the shipped templates have no buttons, so parameters for any other
                # component are counted against zero placeholders as Meta does for headers.
                raise _count_mismatch(kind, len(values), 0)
        return given


def _count_mismatch(kind: str, got: int, expected: int) -> GraphError:
    return cloud_error(
        132000,
        f"{kind}: number of localizable_params ({got}) does not match the expected number of "
        f"params ({expected})",
    )


def _parameter_text(parameter: Any, kind: str) -> str:
    if not isinstance(parameter, dict):
        raise invalid_parameter(f"Param template['components'][{kind}]['parameters'] must hold objects.")
    if parameter.get("type") != "text":
        # guess: currency, date_time and media parameters exist on Meta but not in the sandbox
        raise cloud_error(
            132012,
            f"{kind}: the sandbox supports only parameters of type text, got {parameter.get('type')!r}",
            status=400,
        )
    text = parameter.get("text")
    if not isinstance(text, str) or not text.strip():
        raise cloud_error(131008, f"{kind}: a text parameter needs a non-empty 'text'")
    return text
