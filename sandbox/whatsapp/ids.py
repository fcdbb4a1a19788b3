"""Identifiers shaped like Meta's, so the bridge never relies on a sandbox-only format.

- Message ids are ``wamid.`` + standard base64 of an opaque binary blob (Meta's encode the chat
  and a random key the same way), e.g. ``wamid.HBgLMTU1NTAxMDAyMDAVAgARGBQ...AA==``.
- Media ids are 15–16 digit decimal strings.
- ``fbtrace_id`` is a short random base64-ish token.
"""

from __future__ import annotations

import base64
import secrets
import string

_TRACE_ALPHABET = string.ascii_letters + string.digits + "-_"


def wamid(wa_id: str) -> str:
    """A new unique message id for a message in the chat with ``wa_id``."""
    digits = wa_id.encode("ascii", "replace")[:20]
    key = secrets.token_hex(10).upper().encode("ascii")
    blob = b"\x1c\x18" + bytes([len(digits)]) + digits + b"\x15\x02\x00\x11\x18\x14" + key + b"\x00"
    return "wamid." + base64.b64encode(blob).decode("ascii")


def media_id() -> str:
    return str(10**15 + secrets.randbelow(9 * 10**15))


def fbtrace_id() -> str:
    return "".join(secrets.choice(_TRACE_ALPHABET) for _ in range(23))


def opaque_token() -> str:
    """An unguessable path segment for media download URLs."""
    return secrets.token_urlsafe(24)


def conversation_id() -> str:
    return secrets.token_hex(16)
