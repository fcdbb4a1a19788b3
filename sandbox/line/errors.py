"""Messaging API error answers in LINE's shape: ``{"message": ..., "details"?: [{"message",
"property"}]}`` with the HTTP status of LINE's "Status codes" table.

The bridge branches on the status and the ``message`` text (``Invalid reply token``, ``You have
reached your monthly limit.``); a sandbox that worded or numbered them differently would let the
bridge pass tests it would fail against LINE. Every message below is quoted from the Messaging
API reference (developers.line.biz/en/reference/messaging-api/, "Error messages" and each
endpoint's "Error response") unless marked ``# guess:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Documented message texts.
INVALID_REPLY_TOKEN = "Invalid reply token"
FAILED_TO_SEND = "Failed to send messages"
MONTHLY_LIMIT = "You have reached your monthly limit."
RATE_LIMITED = "The API rate limit has been exceeded. Try again later."
NOT_FOUND = "Not found"
CONTENT_NOT_FOUND = "not found"  # Get content's 404 example is lower-case
CONTENT_GONE = "The content is gone"
RETRY_KEY_ACCEPTED = "The retry key is already accepted"
INVALID_WEBHOOK_URL = "Invalid webhook endpoint URL"
WEBHOOK_NOT_FOUND = "Webhook endpoint not found"
# Observed from api.line.me (quoted in public client code): a missing header and a wrong token.
AUTH_HEADER_REQUIRED = (
    "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'"
)
AUTH_FAILED = "Authentication failed. Confirm that the access token in the authorization header is valid."

# Documented detail texts.
MAY_NOT_BE_EMPTY = "May not be empty"
MUST_BE_SPECIFIED = "must be specified"
TYPE_VALUES = (
    "Must be one of the following values: [text, image, video, audio, location, sticker, template, imagemap]"
)
LOADING_RANGE = "Must be between 5 and 60"
LOADING_MULTIPLE = "must be a multiple of five"
LOADING_USER_ONLY = (
    "Only user id is acceptable, please confirm if there are any group/room ids or illegal ids."
)


@dataclass
class LineError(Exception):
    """A failed Messaging API call, rendered as LINE's error body with its HTTP status."""

    status: int
    message: str
    details: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.details:  # "If the array is empty, this property will not be included"
            body["details"] = list(self.details)
        body.update(self.extra)
        return body


def request_body_errors(details: list[dict[str, str]]) -> LineError:
    """``The request body has X error(s)`` with one detail per problem."""
    return LineError(400, f"The request body has {len(details)} error(s)", details)


def detail(prop: str, message: str) -> dict[str, str]:
    return {"message": message, "property": prop}


def invalid_property(prop: str, line: int, column: int) -> LineError:
    """A property whose JSON value has the wrong type (LINE's Jackson-style parse error)."""
    return LineError(
        400, f"The property, '{prop}', in the request body is invalid (line: {line}, column: {column})"
    )


def unparsable(line: int, column: int) -> LineError:
    return LineError(400, f"The request body could not be parsed as JSON (line: {line}, column: {column})")


def unsupported_content_type(content_type: str) -> LineError:
    # guess: the text is documented ("The content type, XXX, is not supported"); the quoting of
    # XXX and the 415 status (the table's "Unsupported Media Type") are not.
    return LineError(415, f"The content type, '{content_type}', is not supported")


def too_large() -> LineError:
    # guess: the 413 status and its 2 MB limit are documented, the body text is not.
    return LineError(413, "Request Entity Too Large")


def invalid_parameter(name: str) -> LineError:
    """``The value for the 'groupId' parameter is invalid`` (documented for groupId and roomId;
    guess: the same wording for userId and messageId)."""
    return LineError(400, f"The value for the '{name}' parameter is invalid")


def not_found(message: str = NOT_FOUND) -> LineError:
    return LineError(404, message)


def unauthorized(header_present: bool) -> LineError:
    return LineError(401, AUTH_FAILED if header_present else AUTH_HEADER_REQUIRED)


def rate_limited() -> LineError:
    return LineError(429, RATE_LIMITED)


def monthly_limit() -> LineError:
    return LineError(429, MONTHLY_LIMIT)


def internal_error() -> LineError:
    # guess: LINE documents 500 "Error on the internal server" without a body example.
    return LineError(500, "Internal server error")
