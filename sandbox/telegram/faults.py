"""Injected failures for the next N Bot API calls, so fault tests can make "Telegram" answer 500,
502 or 429 on demand instead of waiting for the real thing."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from .errors import ApiError, too_many_requests
from .state import ClientError


@dataclass
class FaultPlan:
    remaining: int = 0
    status: int = 500
    retry_after: int = 1
    methods: frozenset[str] | None = None  # lower-case method names; None = every method
    description: str | None = None

    def configure(self, body: Any) -> dict[str, Any]:
        """Apply a ``POST /sandbox/faults`` body; ``{"fail_next": 0}`` clears the plan."""
        if not isinstance(body, dict):
            raise ClientError("body must be a JSON object")
        fail_next = body.get("fail_next")
        if not isinstance(fail_next, int) or isinstance(fail_next, bool) or fail_next < 0:
            raise ClientError('"fail_next" must be a non-negative integer')
        status = body.get("status", 500)
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise ClientError('"status" must be an HTTP error status (400-599)')
        retry_after = body.get("retry_after", 1)
        if not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 1:
            raise ClientError('"retry_after" must be a positive integer')
        methods = body.get("methods")
        if methods is not None and (
            not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)
        ):
            raise ClientError('"methods" must be a list of Bot API method names')
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise ClientError('"description" must be a string')
        self.remaining = fail_next
        self.status = status
        self.retry_after = retry_after
        self.methods = frozenset(m.lower() for m in methods) if methods else None
        self.description = description
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {
            "fail_next": self.remaining,
            "status": self.status,
            "retry_after": self.retry_after,
            "methods": sorted(self.methods) if self.methods else None,
        }

    def take(self, method: str) -> ApiError | None:
        """The error to answer for this call instead of running it, if one is planned."""
        if self.remaining <= 0:
            return None
        if self.methods is not None and method.lower() not in self.methods:
            return None
        self.remaining -= 1
        if self.status == 429:
            return too_many_requests(self.retry_after)
        if self.description:
            return ApiError(self.status, self.description)
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        if self.status == 400:
            return ApiError(400, "Bad Request: injected fault")
        return ApiError(self.status, phrase)
