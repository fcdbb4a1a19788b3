"""Profile pictures: what ``pictureUrl`` in a profile points at (see sandbox/line/README.md).

On LINE a profile's ``pictureUrl`` is an https address on LINE's CDN (``profile.line-scdn.net``)
that anyone holding it may fetch, without the channel access token, and a new picture gets a new
address. The sandbox plays that CDN on its own host, at ``/profile-pictures/{id}``: a test puts
a picture on a client (``PUT /client/{user}/picture``, bytes or a generated PNG), the profile
endpoints then give its URL, and the URL serves those bytes, or the error a test asked for
(``PATCH``), so a bridge's handling of a broken picture can be tried too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .control_common import guard, json_response, read_json
from .media import sniff
from .state import ClientError, SandboxState, User

log = logging.getLogger("sandbox.line.pictures")

PATH = "/profile-pictures"
#: guess: LINE does not say how large a profile picture may be; its app shrinks them far below.
MAX_PICTURE = 10 * 1024 * 1024


@dataclass
class ProfilePicture:
    picture_id: str
    data: bytes
    content_type: str
    #: What the CDN answers for it: 200 serves the bytes, an error status serves only that.
    status: int = 200
    fetches: int = 0

    def describe(self, url: str) -> dict[str, Any]:
        return {
            "pictureUrl": url,
            "contentType": self.content_type,
            "size": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
            "status": self.status,
            "fetches": self.fetches,
        }


def generated_png(seed: str, size: int = 8) -> bytes:
    """A small solid-colour PNG, its colour from ``seed``: every generated picture differs."""
    red, green, blue = hashlib.sha256(seed.encode()).digest()[:3]
    row = b"\x00" + bytes((red, green, blue)) * size  # filter byte "none", then RGB pixels

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


class ProfilePictures:
    """The CDN (no authentication, as LINE's) and the control API that puts pictures on users."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.pictures: dict[str, ProfilePicture] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("GET", f"{PATH}/{{picture_id}}", self.serve)
        for method, handler in (("PUT", self.put), ("PATCH", self.patch), ("DELETE", self.delete)):
            app.router.add_route(method, "/client/{user}/picture", guard(handler))
        app.router.add_route("GET", "/client/{user}/picture", guard(self.get))

    async def serve(self, request: web.Request) -> web.Response:
        picture = self.pictures.get(request.match_info["picture_id"])
        if picture is None:
            return web.Response(status=404, text="Not Found")
        picture.fetches += 1
        log.info("event=picture_fetch picture_id=%s status=%d", picture.picture_id, picture.status)
        if picture.status != 200:
            return web.Response(status=picture.status, text=f"HTTP {picture.status}")
        return web.Response(body=picture.data, content_type=picture.content_type)

    async def put(self, request: web.Request) -> web.Response:
        """A new picture for the user, at a new URL (the old URL keeps serving the old one)."""
        body = await read_json(request)
        user = self.state.user(request.match_info["user"])
        picture_id = "0h" + secrets.token_urlsafe(24)
        data = _image(body["image"]) if body.get("image") is not None else generated_png(picture_id)
        content_type = body.get("mimeType", sniff(data) or "application/octet-stream")
        if not isinstance(content_type, str) or not content_type:
            raise ClientError('"mimeType" must be a media type like "image/jpeg"')
        picture = ProfilePicture(picture_id, data, content_type, _status(body.get("status", 200)))
        self.pictures[picture_id] = picture
        user.picture_url = f"{request.url.origin()}{PATH}/{picture_id}"
        self.state.changes.notify()
        log.info("event=picture_set user_id=%s picture_id=%s size=%d", user.user_id, picture_id, len(data))
        return json_response({"userId": user.user_id, **picture.describe(user.picture_url)})

    async def patch(self, request: web.Request) -> web.Response:
        """``{"status"}``: what the CDN answers for the user's current picture, URL unchanged."""
        body = await read_json(request)
        user, picture = self._current(request)
        picture.status = _status(body.get("status"))
        return json_response({"userId": user.user_id, **picture.describe(user.picture_url or "")})

    async def get(self, request: web.Request) -> web.Response:
        user, picture = self._current(request)
        return json_response({"userId": user.user_id, **picture.describe(user.picture_url or "")})

    async def delete(self, request: web.Request) -> web.Response:
        """The user removes their picture: profiles leave ``pictureUrl`` out."""
        user = self.state.existing_user(request.match_info["user"])
        user.picture_url = None
        self.state.changes.notify()
        return json_response({"userId": user.user_id})

    def _current(self, request: web.Request) -> tuple[User, ProfilePicture]:
        user = self.state.existing_user(request.match_info["user"])
        url = user.picture_url or ""
        picture = self.pictures.get(url.rsplit("/", 1)[-1]) if f"{PATH}/" in url else None
        if picture is None:
            raise ClientError("the user has no picture served by the sandbox (PUT one first)", 404)
        return user, picture


def _image(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise ClientError('"image" must be base64-encoded bytes')
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError('"image" is not valid base64') from None
    if len(data) > MAX_PICTURE:
        raise ClientError('"image" is larger than 10 MB', 413)
    return data


def _status(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not (value == 200 or 400 <= value <= 599):
        raise ClientError('"status" must be 200 or an HTTP error status (400-599)')
    return value
