"""Injected failures for the next N Messaging API calls (``POST /control/faults``).

``after: true`` makes the call do its work and *then* answer the error — the case the retry key
exists for: LINE accepted the push but the answer was lost, so the bridge retries with the same
``X-Line-Retry-Key`` and must get 409 with the ``sentMessages`` of the first attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import LineError
from .state import ClientError


@dataclass
class FaultPlan:
    remaining: int = 0
    endpoint: str = "*"
    status: int = 500
    message: str = "Internal server error"  # guess: LINE's 500 body text is not documented
    after: bool = False

    def configure(self, body: Any) -> dict[str, Any]:
        """Apply ``{"count", "endpoint"?, "status"?, "message"?, "after"?}``; ``count: 0`` clears."""
        if not isinstance(body, dict):
            raise ClientError("body must be a JSON object")
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ClientError('"count" must be a non-negative integer')
        endpoint = body.get("endpoint", "*")
        if not isinstance(endpoint, str) or not endpoint:
            raise ClientError('"endpoint" must be "*" or like "POST /v2/bot/message/push"')
        status = body.get("status", 500)
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise ClientError('"status" must be an HTTP error status (400-599)')
        message = body.get("message", "Internal server error")
        if not isinstance(message, str):
            raise ClientError('"message" must be a string')
        after = body.get("after", False)
        if not isinstance(after, bool):
            raise ClientError('"after" must be true or false')
        self.remaining, self.endpoint, self.status, self.message, self.after = (
            count,
            endpoint,
            status,
            message,
            after,
        )
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {
            "remaining": self.remaining,
            "endpoint": self.endpoint,
            "status": self.status,
            "message": self.message,
            "after": self.after,
        }

    def take(self, endpoint: str) -> tuple[LineError, bool] | None:
        """The error to answer for a call to ``endpoint`` and whether to run the call first."""
        if self.remaining <= 0 or self.endpoint not in ("*", endpoint):
            return None
        self.remaining -= 1
        return LineError(self.status, self.message), self.after
