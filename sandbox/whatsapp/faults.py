"""Injected failures for the next N Graph API calls (``POST /control/faults``), so fault tests
can make "Meta" answer 500, 503 or a throttling error on demand instead of waiting for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import KNOWN_CODES, GraphError, cloud_error, throughput_exceeded
from .state import ClientError

# Which Graph calls each "path" covers.
PATHS = frozenset({"messages", "media", "templates", "phone_numbers", "*"})


@dataclass
class FaultPlan:
    remaining: int = 0
    path: str = "*"
    status: int | None = None
    code: int = 131000
    details: str | None = None

    def configure(self, body: Any) -> dict[str, Any]:
        """Apply ``{"path", "count", "status"?, "code"?, "details"?}``; ``count: 0`` clears."""
        if not isinstance(body, dict):
            raise ClientError("body must be a JSON object")
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ClientError('"count" must be a non-negative integer')
        path = body.get("path", "*")
        if path not in PATHS:
            raise ClientError(f'"path" must be one of {sorted(PATHS)}')
        code = body.get("code", 131000)
        if not isinstance(code, int) or isinstance(code, bool):
            raise ClientError('"code" must be an integer error code')
        status = body.get("status")
        if status is not None and (
            not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599
        ):
            raise ClientError('"status" must be an HTTP error status (400-599)')
        details = body.get("details")
        if details is not None and not isinstance(details, str):
            raise ClientError('"details" must be a string')
        self.remaining, self.path, self.code, self.status, self.details = (
            count,
            path,
            code,
            status,
            details,
        )
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {
            "remaining": self.remaining,
            "path": self.path,
            "code": self.code,
            "status": self.status if self.status is not None else self._default_status(),
        }

    def _default_status(self) -> int:
        return KNOWN_CODES.get(self.code, ("", 500))[1]

    def take(self, path: str) -> GraphError | None:
        """The error to answer instead of running a call on ``path``, if one is planned."""
        if self.remaining <= 0 or (self.path != "*" and self.path != path):
            return None
        self.remaining -= 1
        if self.code == 130429 and self.status is None and self.details is None:
            return throughput_exceeded()
        return cloud_error(
            self.code,
            self.details or "Injected by the sandbox (POST /control/faults).",
            status=self.status,
        )
