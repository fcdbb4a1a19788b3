"""Graph API error answers in Meta's shape, with the codes, titles and HTTP statuses of Meta's
"Error codes" reference for the Cloud API.

The bridge branches on ``error.code`` (and ``error_data.details`` for humans), and on the HTTP
status for retry decisions; a sandbox that numbered them differently would let the bridge pass
tests it would fail against Meta. Every answer carries a fresh ``fbtrace_id`` as Meta's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ids import fbtrace_id

# code -> (title, HTTP status). Titles and statuses from Meta's error-code reference
# (Authorization, Throttling, Integrity and "Other" tables). Throttling errors are 400 there.
KNOWN_CODES: dict[int, tuple[str, int]] = {
    0: ("AuthException", 401),
    1: ("API Unknown", 400),
    2: ("API Service", 503),
    3: ("API Method", 500),
    4: ("API Too Many Calls", 400),
    10: ("Permission Denied", 403),
    100: ("Invalid parameter", 400),
    190: ("Access token has expired", 401),
    368: ("Temporarily blocked for policies violations", 403),
    80007: ("Rate limit issues", 400),
    130429: ("Rate limit hit", 400),
    130472: ("User's number is part of an experiment", 400),
    131000: ("Something went wrong", 500),
    131005: ("Access denied", 403),
    131008: ("Required parameter is missing", 400),
    131009: ("Parameter value is not valid", 400),
    131016: ("Service unavailable", 503),
    131021: ("Recipient cannot be sender", 400),
    131026: ("Message undeliverable", 400),
    131031: ("Account has been locked", 403),
    131042: ("Business eligibility payment issue", 400),
    131047: ("Re-engagement message", 400),
    131048: ("Spam rate limit hit", 400),
    131051: ("Unsupported message type", 400),
    131052: ("Media download error", 400),
    131053: ("Media upload error", 400),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", 400),
    131057: ("Account in maintenance mode", 500),
    132000: ("Number of parameters does not match the expected number of params", 400),
    132001: ("Template name does not exist in the translation", 404),
    132005: ("Translated text too long", 400),
    132012: ("Parameter format does not match format in the created template", 400),
    132015: ("Template is Paused", 400),
    132016: ("Template is Disabled", 400),
    133010: ("Phone number Not Registered", 400),
    135000: ("Generic user error", 400),
}

GRAPH_DOCS = "https://developers.facebook.com/docs/graph-api"
ERROR_CODES_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


@dataclass
class GraphError(Exception):
    """A failed Graph API call, rendered as Meta's ``{"error": {...}}`` with its HTTP status."""

    status: int
    code: int
    message: str
    type: str = "OAuthException"
    details: str | None = None
    subcode: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["fbtrace_id"] = fbtrace_id()
        return {"error": error}


def cloud_error(
    code: int, details: str | None = None, *, status: int | None = None, subcode: int | None = None
) -> GraphError:
    """A Cloud API error: message ``"(#<code>) <title>"`` and the reference's HTTP status."""
    title, default_status = KNOWN_CODES.get(code, ("Something went wrong", 400))
    return GraphError(
        status=status if status is not None else default_status,
        code=code,
        message=f"(#{code}) {title}",
        details=details,
        subcode=subcode,
    )


def invalid_parameter(message: str, details: str | None = None) -> GraphError:
    """Code 100 with Meta's own wording in ``message``, e.g. ``(#100) The parameter to is
    required.``"""
    return GraphError(status=400, code=100, message=f"(#100) {message}", details=details)


def missing_parameter(name: str) -> GraphError:
    return invalid_parameter(f"The parameter {name} is required.")


def invalid_token() -> GraphError:
    """What Graph answers for a token it cannot use."""
    # guess: Meta answers a *missing* token with code 104 ("An access token is required to
    # request this resource.", HTTP 400); the sandbox answers missing and wrong tokens alike
    # with 190/401, the code the bridge must treat as "credentials are bad".
    return GraphError(status=401, code=190, message="Invalid OAuth access token - Cannot parse access token")


def unknown_object(object_id: str, method: str) -> GraphError:
    """Graph's answer for an id that is not an object this token can reach (code 100, 33)."""
    return GraphError(
        status=400,
        code=100,
        type="GraphMethodException",
        subcode=33,
        message=(
            f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this operation. "
            f"Please read the Graph API documentation at {GRAPH_DOCS}"
        ),
    )


def unknown_path(path: str) -> GraphError:
    return GraphError(status=400, code=2500, message=f"Unknown path components: {path}")


def throughput_exceeded() -> GraphError:
    """130429 exactly as the example on Meta's error-code page (subcode 2494055)."""
    return cloud_error(130429, "Cloud API message throughput has been reached.", subcode=2494055)


def pair_rate_exceeded() -> GraphError:
    return cloud_error(
        131056,
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    )


def status_error(code: int, details: str, *, title: str | None = None) -> dict[str, Any]:
    """One entry of ``statuses[].errors`` / ``messages[].errors`` in a webhook, as Meta sends
    them: ``code``, ``title``, ``message`` (the same title), ``error_data.details``, ``href``."""
    name = title or KNOWN_CODES.get(code, ("Something went wrong", 400))[0]
    return {
        "code": code,
        "title": name,
        "message": name,
        "error_data": {"details": details},
        "href": ERROR_CODES_HREF,
    }


RE_ENGAGEMENT_DETAILS = (
    "Message failed to send because more than 24 hours have passed since the customer last "
    "replied to this number."
)
