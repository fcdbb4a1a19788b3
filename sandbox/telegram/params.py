"""Reading Bot API parameters from every encoding the official server accepts.

Bots send query strings, ``application/x-www-form-urlencoded`` (python-telegram-bot's choice,
with complex fields as JSON strings), ``application/json`` and ``multipart/form-data``. Values
from forms and queries are strings, values from JSON bodies keep their JSON types; the getters
here hide that difference from the method handlers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web

from .errors import ApiError, bad_request, too_large

MAX_PLAIN_BODY = 1024 * 1024  # form and JSON calls
MAX_MULTIPART_BODY = 50 * 1000 * 1000  # uploads, as the Bot API's 50 MB limit


@dataclass
class UploadedFile:
    field_name: str
    filename: str | None
    content_type: str | None
    content: bytes


@dataclass
class Params:
    """One call's parameters; ``get_*`` raise 400 answers on malformed values."""

    values: dict[str, Any] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def get_str(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return json.dumps(value, ensure_ascii=False)
        return str(value)

    def get_int(
        self, name: str, default: int | None = None, *, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        """An integer, clamped to ``[lo, hi]`` as the official server clamps limits/timeouts."""
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            number = int(value)
        elif isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                raise bad_request(f'parameter "{name}" must be an integer') from None
        else:
            raise bad_request(f'parameter "{name}" must be an integer')
        if lo is not None:
            number = max(lo, number)
        if hi is not None:
            number = min(hi, number)
        return number

    def get_bool(self, name: str, default: bool = False) -> bool:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.strip().lower() in ("true", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0"):
            return False
        raise bad_request(f'parameter "{name}" must be a Boolean')

    def get_json(self, name: str, description: str) -> Any:
        """A structured parameter: a JSON string in forms, or already structured in JSON bodies.

        ``description`` completes the official wording, e.g. ``can't parse entities JSON object``.
        """
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {description} JSON object") from None
        return value


def loads_utf8(raw: bytes) -> Any:
    """``json.loads`` that also refuses ``\\ud800``-style lone surrogates, which are not text.

    Raises ValueError (UnicodeError and JSONDecodeError are ValueErrors).
    """
    value = json.loads(raw.decode("utf-8"))
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


async def read_params(request: web.Request) -> Params:
    """Merge query string and body (the body wins), enforcing the size limits."""
    try:
        query = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise bad_request("can't parse query string as UTF-8") from None
    params = Params(values=dict(query))
    declared = request.content_length
    content_type = request.content_type
    if content_type == "multipart/form-data":
        if declared is not None and declared > MAX_MULTIPART_BODY:
            raise too_large()
        await read_multipart(request, params)
        return params
    if declared is not None and declared > MAX_PLAIN_BODY:
        raise too_large()
    body = await read_limited(request, MAX_PLAIN_BODY)
    if not body.strip():
        return params
    if content_type == "application/json":
        try:
            decoded = loads_utf8(body)
        except ValueError:
            raise bad_request("can't parse JSON request body as UTF-8 JSON") from None
        if not isinstance(decoded, dict):
            raise bad_request("the JSON request body must be an object")
        params.values.update(decoded)
    elif content_type == "application/x-www-form-urlencoded":
        try:
            text = body.decode("ascii")
            pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise bad_request("can't parse form-urlencoded request body as UTF-8") from None
        params.values.update(pairs)
    else:
        raise bad_request(
            "unsupported Content-Type; use application/x-www-form-urlencoded, "
            "application/json or multipart/form-data"
        )
    return params


async def read_limited(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def read_multipart(request: web.Request, params: Params) -> None:
    size = 0
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise bad_request("nested multipart bodies are not supported")
            data = bytearray()
            while True:
                chunk = await part.read_chunk(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_MULTIPART_BODY:
                    raise too_large()
                data.extend(chunk)
            name = part.name
            if not name:
                continue
            if part.filename is not None:
                params.files[name] = UploadedFile(
                    name, part.filename, part.headers.get("Content-Type"), bytes(data)
                )
            else:
                try:
                    params.values[name] = bytes(data).decode("utf-8")
                except UnicodeDecodeError:
                    raise bad_request(f'multipart field "{name}" is not valid UTF-8') from None
    except ApiError:
        raise
    except Exception:  # any parser failure is the sender's malformed body
        raise bad_request("can't parse multipart/form-data request body") from None
