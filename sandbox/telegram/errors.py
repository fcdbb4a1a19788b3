"""Bot API error answers, with the exact descriptions and HTTP statuses of the official server.

Client libraries branch on these (python-telegram-bot maps the HTTP status to an exception class
and reads ``parameters.retry_after``), so a sandbox that words or numbers them differently would
let the bridge pass tests it would fail against Telegram.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failed Bot API call, rendered as ``{"ok": false, "error_code": N, "description": ...}``."""

    def __init__(
        self,
        error_code: int,
        description: str,
        *,
        parameters: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body the official server sends for this error."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


def forbidden(detail: str) -> ApiError:
    return ApiError(403, f"Forbidden: {detail}")


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def conflict(detail: str) -> ApiError:
    return ApiError(409, f"Conflict: {detail}")


def too_large() -> ApiError:
    return ApiError(413, "Request Entity Too Large")


def too_many_requests(retry_after: int) -> ApiError:
    """429 as Telegram sends it: in the description, in ``parameters`` and as ``Retry-After``."""
    return ApiError(
        429,
        f"Too Many Requests: retry after {retry_after}",
        parameters={"retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


CHAT_NOT_FOUND = "chat not found"
TEXT_EMPTY = "message text is empty"
TEXT_TOO_LONG = "message is too long"
BOT_BLOCKED = "bot was blocked by the user"
TERMINATED_BY_OTHER_POLL = (
    "terminated by other getUpdates request; make sure that only one bot instance is running"
)
TERMINATED_BY_SET_WEBHOOK = "terminated by setWebhook request"
WEBHOOK_ACTIVE = (
    "can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
)
CAPTION_TOO_LONG = "message caption is too long"
GROUP_MIGRATED = "group chat was upgraded to a supergroup chat"
# Files
WRONG_FILE_ID = "wrong file identifier/HTTP URL specified"
URL_NOT_FETCHED = "failed to get HTTP URL content"
FILE_TOO_BIG = "file is too big"
# Edits, deletions, reactions
EDIT_NOT_FOUND = "message to edit not found"
CANT_BE_EDITED = "message can't be edited"
NO_TEXT_TO_EDIT = "there is no text in the message to edit"
NO_CAPTION_TO_EDIT = "there is no caption in the message to edit"
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
DELETE_NOT_FOUND = "message to delete not found"
CANT_DELETE_FOR_EVERYONE = "message can't be deleted for everyone"
CANT_DELETE = "message can't be deleted"
REACT_NOT_FOUND = "message to react not found"
REACTION_INVALID = "REACTION_INVALID"
REACTIONS_TOO_MANY = "REACTIONS_TOO_MANY"
# Telegram Business. The server's own (upper-case) errors pass through the Bot API unchanged.
BUSINESS_CONNECTION_NOT_FOUND = "business connection not found"
BUSINESS_CONNECTION_INVALID = "BUSINESS_CONNECTION_INVALID"  # the owner disconnected the bot
BUSINESS_PEER_USAGE_MISSING = "BUSINESS_PEER_USAGE_MISSING"  # no incoming message in 24 hours
BUSINESS_NO_RIGHTS = "BOT_ACCESS_FORBIDDEN"  # the connection lacks the needed right
# Webhooks
SECRET_TOKEN_INVALID = "secret token contains unallowed characters"
SECRET_TOKEN_TOO_LONG = "secret token is too long"
