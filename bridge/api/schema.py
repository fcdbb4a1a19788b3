"""The OpenAPI document as the API's single source of truth.

The routes are made from its paths and every request is checked against its parameters and
request bodies (JSON Schema 2020-12, as OpenAPI 3.1 uses) before a handler sees it, so the
document cannot drift from what the server accepts. A request that does not match is refused
with the name of the first field that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT = Path(__file__).with_name("openapi.yaml")
_BASE = "urn:houseline-api"
_METHODS = ("get", "post", "put", "patch", "delete")


class RequestInvalid(Exception):
    def __init__(self, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Parameter:
    name: str
    where: str
    required: bool
    validator: Draft202012Validator
    integer: bool


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    parameters: tuple[Parameter, ...] = ()
    body: Draft202012Validator | None = None
    body_required: bool = False
    scopes: frozenset[str] = field(default_factory=frozenset)


class ApiDocument:
    def __init__(self, path: Path = DOCUMENT, networks: tuple[str, ...] | None = None) -> None:
        """``networks``: the registered networks, which a ``{network}`` in a path may name (the
        document lists the built-in ones)."""
        self.doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
        if networks is not None:
            self.doc["components"]["parameters"]["Network"]["schema"]["enum"] = list(networks)
        self.registry = Registry().with_resource(
            _BASE, Resource.from_contents(self.doc, default_specification=DRAFT202012)
        )
        self.base_path = self.doc["servers"][0]["url"].rstrip("/")
        self.operations = [op for p, item in self.doc["paths"].items() for op in self._operations(p, item)]

    def _validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"{_BASE}#{quote(pointer, safe='/~')}"}, registry=self.registry)

    def _resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """A parameter given by $ref: its definition and the pointer it lives at."""
        ref = node.get("$ref")
        if not ref:
            return node, None
        pointer = ref.removeprefix("#")
        target: Any = self.doc
        for part in pointer.strip("/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target, pointer

    def _operations(self, path: str, item: dict[str, Any]) -> list[Operation]:
        escaped = path.replace("~", "~0").replace("/", "~1")
        out = []
        for method in _METHODS:
            spec = item.get(method)
            if spec is None:
                continue
            params = []
            for i, raw in enumerate(spec.get("parameters", [])):
                param, pointer = self._resolve(raw)
                pointer = pointer or f"/paths/{escaped}/{method}/parameters/{i}"
                schema = param.get("schema", {})
                resolved, _ = self._resolve(schema) if "$ref" in schema else (schema, None)
                params.append(
                    Parameter(
                        param["name"],
                        param["in"],
                        bool(param.get("required")),
                        self._validator(f"{pointer}/schema"),
                        resolved.get("type") == "integer",
                    )
                )
            body = spec.get("requestBody")
            validator = None
            if body is not None:
                validator = self._validator(
                    f"/paths/{escaped}/{method}/requestBody/content/application~1json/schema"
                )
            out.append(
                Operation(
                    spec["operationId"],
                    method.upper(),
                    path,
                    tuple(params),
                    validator,
                    bool(body and body.get("required")),
                )
            )
        return out

    @staticmethod
    def check(
        op: Operation, path_params: dict[str, str], query: dict[str, str], body: Any, has_body: bool
    ) -> dict[str, Any]:
        """The request's parameters, typed; raises RequestInvalid naming the first bad field."""
        values: dict[str, Any] = {}
        known = {p.name for p in op.parameters if p.where == "query"}
        for name in query:
            if name not in known:
                raise RequestInvalid(
                    name,
                    f"unknown query parameter “{name}”; the parameters are {', '.join(sorted(known)) or 'none'}",
                )
        for p in op.parameters:
            source = path_params if p.where == "path" else query
            if p.name not in source:
                if p.required:
                    raise RequestInvalid(p.name, f"“{p.name}” is required")
                continue
            value: Any = source[p.name]
            if p.integer:
                try:
                    value = int(value)
                except ValueError:
                    raise RequestInvalid(p.name, f"“{p.name}” must be a whole number") from None
            _validate(p.validator, value, p.name)
            values[p.name] = value
        if op.body is not None:
            if not has_body:
                if op.body_required:
                    raise RequestInvalid("body", "a JSON body is required")
                body = {}
            _validate(op.body, body, None)
            values["body"] = body
        elif has_body:
            raise RequestInvalid("body", "this endpoint takes no body")
        return values


def _validate(validator: Draft202012Validator, value: Any, name: str | None) -> None:
    error: ValidationError | None = next(
        iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None
    )
    if error is None:
        return
    where = ".".join(str(p) for p in error.absolute_path)
    field_name = name if name is not None else (where or "body")
    if name is not None and where:
        field_name = f"{name}.{where}"
    raise RequestInvalid(field_name, f"“{field_name}”: {_short(error)}")


def _short(error: ValidationError) -> str:
    """The validator's message without echoing a huge value back."""
    message = error.message
    return message if len(message) <= 200 else message[:197] + "..."
