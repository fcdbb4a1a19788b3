"""Reading Messaging API request bodies the way LINE rejects them.

LINE parses bodies with a strict JSON reader before validating them, so there are two kinds of
refusal: the body (or one property's value) cannot be read at all — ``The request body could
not be parsed as JSON (line, column)`` / ``The property, 'X', in the request body is invalid
(line, column)`` — or it reads but breaks the rules — ``The request body has N error(s)`` with
``details``. :class:`Body` keeps the raw text so a type error can name a line and column.

Bodies are limited to 2 MB ("413 Payload Too Large: Request exceeds the max size of 2MB").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .errors import LineError, invalid_property, too_large, unparsable, unsupported_content_type

MAX_BODY = 2 * 1024 * 1024


@dataclass
class Body:
    raw: str
    data: dict[str, Any]

    def position(self, prop: str) -> tuple[int, int]:
        """Line and column (1-based) of the value of ``prop``'s last path segment.

        guess: LINE reports where its reader stopped; the sandbox points at the first value of a
        key with that name, which is the same spot for the bodies the bridge sends.
        """
        key = re.split(r"[.\[]", prop.replace("]", ""))[-1] if prop else ""
        key = re.sub(r"^\d+$", "", key)
        pos = 0
        if key:
            found = re.search(r'"' + re.escape(key) + r'"\s*:\s*', self.raw)
            if found:
                pos = found.end()
        line = self.raw.count("\n", 0, pos) + 1
        column = pos - (self.raw.rfind("\n", 0, pos) + 1) + 1
        return line, column

    def invalid(self, prop: str) -> LineError:
        return invalid_property(prop, *self.position(prop))


async def read_body(request: web.Request, *, allow_empty: bool = False) -> Body:
    """The JSON object of a POST/PUT body, or the LineError LINE would answer."""
    raw_bytes = await request.content.read(MAX_BODY + 1)
    if len(raw_bytes) > MAX_BODY:
        raise too_large()
    if not raw_bytes.strip() and allow_empty:
        return Body("", {})
    if request.content_type != "application/json":
        raise unsupported_content_type(request.content_type or "")
    try:
        raw = raw_bytes.decode("utf-8")
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise unparsable(1, 1) from None
    except json.JSONDecodeError as exc:
        raise unparsable(exc.lineno, exc.colno) from None
    if not isinstance(data, dict):
        # guess: a non-object body fails like an unreadable one, at its first character
        raise unparsable(1, 1)
    return Body(raw, data)
