"""Identifiers shaped like LINE's, so the bridge never relies on a sandbox-only format.

- User ids ``U`` + 32 hex digits, group ids ``C`` + 32, room ids ``R`` + 32 (the webhook
  ``destination`` pattern ``U[0-9a-f]{32}`` in LINE's reference and line-openapi's webhook.yml).
- Message ids are 18-digit decimal strings (``"461230966842064897"`` in the reference).
- Reply tokens are 32 hex digits (``"757913772c4646b784d4b7ce46d12671"``).
- Quote tokens are long URL-safe strings (``"IStG5h1Tz7bsH6xinEQtKQ9IdtcN5w..."``).
- Webhook event ids are ULIDs (26 characters of Crockford base32, time-ordered).
- Request ids (``X-Line-Request-Id``) are UUIDs.

The control API also accepts short aliases (``alice``) for users; :func:`user_id_for` turns an
alias into a stable LINE-shaped id so demos and tests can name people.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid

USER_ID = re.compile(r"U[0-9a-f]{32}")
GROUP_ID = re.compile(r"C[0-9a-f]{32}")
ROOM_ID = re.compile(r"R[0-9a-f]{32}")
ALIAS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
UUID_HEX = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_last_message_id = 470_000_000_000_000_000 + secrets.randbelow(10**16)


def user_id_for(key: str) -> str | None:
    """A LINE user id for ``key``: itself when it already is one, a stable id derived from an
    alias otherwise; None when it is neither."""
    if USER_ID.fullmatch(key):
        return key
    if ALIAS.fullmatch(key):
        return "U" + hashlib.md5(key.encode()).hexdigest()
    return None


def random_user_id() -> str:
    return "U" + secrets.token_hex(16)


def group_id() -> str:
    return "C" + secrets.token_hex(16)


def room_id() -> str:
    return "R" + secrets.token_hex(16)


def message_id() -> str:
    """A new 18-digit message id, larger than every one before (LINE's grow with time)."""
    global _last_message_id
    _last_message_id += secrets.randbelow(4096) + 1
    return str(_last_message_id)


def reply_token() -> str:
    return secrets.token_hex(16)


def quote_token() -> str:
    return secrets.token_urlsafe(96)


def request_id() -> str:
    return str(uuid.uuid4())


def basic_id() -> str:
    """A basic id like ``@123abcde`` (an ``@``, three digits, five lowercase letters)."""
    letters = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
    return f"@{secrets.randbelow(900) + 100}{letters}"


def ulid(now_ms: int | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def image_set_id() -> str:
    return secrets.token_hex(32).upper()
