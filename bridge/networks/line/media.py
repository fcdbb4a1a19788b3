"""What an employee's file becomes on LINE, and the files the bridge serves LINE to fetch.

LINE takes pictures, videos and audio from a bot only as HTTPS URLs it downloads itself (there
is no upload endpoint), and takes no other files at all. So the bridge serves each outbound file
on its own listener, under ``webhook.media_path``, at an unguessable address:
HMAC-SHA256(channel secret, Matrix event id, part), so a send retried after a crash serves the
same bytes at the same address the first attempt handed LINE. LINE fetches a file when a
recipient first opens it, not when it is sent, so each is kept for :data:`KEEP_S` on disk (in a
private directory under the system's temporary directory), the oldest going first when they
take more than :data:`MAX_STORED_BYTES`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import stat
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bridge.events import MediaKind, OutboundMedia
from bridge.networks.base import DeliveryError

log = logging.getLogger("houseline.line.media")

#: LINE fetches lazily (when a recipient opens the message), so the file must stay reachable.
KEEP_S = 7 * 24 * 3600
MAX_STORED_BYTES = 2 * 1024**3
#: LINE's limits (Messaging API reference, message objects): pictures JPEG or PNG up to 10 MB,
#: their preview up to 1 MB; videos MP4 and audio M4A or MP3 up to 200 MB.
IMAGE_TYPES = {"image/jpeg": ".jpg", "image/png": ".png"}
VIDEO_TYPES = {"video/mp4": ".mp4"}
AUDIO_TYPES = {
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/m4a": ".m4a",
}
MAX_IMAGE = 10 * 1024 * 1024
MAX_PREVIEW = 1024 * 1024
MAX_VIDEO = 200 * 1024 * 1024
MAX_AUDIO = 200 * 1024 * 1024
#: A stored file's name: its token and extension (nothing else is ever served).
NAME_RE = re.compile(r"^([A-Za-z0-9_-]{43})(\.[a-z0-9]{2,4})$")
PREVIEW_NAME = "preview.png"
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".mp4": "video/mp4",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
}


@dataclass(frozen=True)
class Plan:
    """How one file goes to LINE: as which message type, stored under which extension, and
    anything the employee should know about it."""

    line_type: str
    extension: str
    note: str = ""


def plan(media: OutboundMedia) -> Plan:
    """LINE's message type for the file by its content type (a picture sent as a Matrix file
    still goes as a picture); a file LINE cannot show is refused, with the reason."""
    mimetype = media.mimetype.split(";")[0].strip().lower()
    size = len(media.data)
    for line_type, types, limit in (
        ("image", IMAGE_TYPES, MAX_IMAGE),
        ("video", VIDEO_TYPES, MAX_VIDEO),
        ("audio", AUDIO_TYPES, MAX_AUDIO),
    ):
        if mimetype in types:
            if size > limit:
                raise DeliveryError(
                    f"the file is {size / 1e6:.1f} MB; LINE takes {_a(_word(line_type))} of at most {limit // (1024 * 1024)} MB",
                    permanent=True,
                )
            note = ""
            if media.kind is MediaKind.FILE:
                note = f"Sent as {_a(_word(line_type))}: a LINE bot cannot send files."
            elif line_type == "image" and size > MAX_PREVIEW:
                note = "LINE shows a preview of at most 1 MB: the client sees a plain preview until they open the picture."
            return Plan(line_type, types[mimetype], note)
    if media.kind is MediaKind.FILE or not mimetype.startswith(("image/", "video/", "audio/")):
        raise DeliveryError(
            "a LINE bot cannot send files (documents); LINE accepts from bots only pictures (JPEG, PNG), "
            "videos (MP4) and audio (M4A, MP3); share the file through a link instead",
            permanent=True,
        )
    raise DeliveryError(
        f"LINE does not accept {_a(_word(mimetype.split('/')[0]))} of type {mimetype} from a bot; it takes "
        "pictures as JPEG or PNG, videos as MP4 and audio as M4A or MP3",
        permanent=True,
    )


def _word(kind: str) -> str:
    return {"image": "picture", "audio": "audio file"}.get(kind, kind)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {word}"


class MediaStore:
    """Outbound files on disk, named by token; served by the webhook listener."""

    def __init__(
        self, secret: str, directory: Path | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = hashlib.sha256(b"houseline-line-media\0" + secret.encode()).digest()
        self.clock = clock
        self.directory = directory or _private_dir(self._key)

    def token(self, event_id: str, part: int) -> str:
        digest = hmac.new(self._key, f"{event_id}\0{part}".encode(), hashlib.sha256).digest()
        return _b64(digest)

    def put(self, event_id: str, part: int, data: bytes, extension: str) -> str:
        """Stores the file (again, if a retry brings it again) and returns its name."""
        name = f"{self.token(event_id, part)}{extension}"
        path = self.directory / name
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.prune()
        return name

    def path(self, name: str) -> Path | None:
        """The file to serve for ``name``; None unless it is a stored, unexpired file."""
        if not NAME_RE.fullmatch(name):
            return None
        path = self.directory / name
        try:
            info = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or self.clock() - info.st_mtime > KEEP_S:
            return None
        return path

    def prune(self) -> None:
        """Drops expired files, then the oldest while they take more than the budget."""
        now = self.clock()
        files = []
        for entry in self.directory.iterdir():
            try:
                info = entry.stat()
            except OSError:
                continue
            stale_part = entry.suffix == ".part" and now - info.st_mtime > 3600
            if now - info.st_mtime > KEEP_S or stale_part:
                entry.unlink(missing_ok=True)
            elif NAME_RE.fullmatch(entry.name):
                files.append((info.st_mtime, info.st_size, entry))
        total = sum(size for _, size, _ in files)
        for _, size, entry in sorted(files):
            if total <= MAX_STORED_BYTES:
                break
            entry.unlink(missing_ok=True)
            total -= size


def content_type(name: str) -> str:
    return _CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")


def _private_dir(key: bytes) -> Path:
    """One directory per channel and system user, readable by nobody else; stable across
    restarts so files LINE has not fetched yet survive one."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(tempfile.gettempdir()) / f"houseline-line-media-{uid}-{key.hex()[:12]}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        raise RuntimeError(f"{path} is not a directory of this user; remove it and start again")
    os.chmod(path, 0o700)
    return path


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def placeholder_png(size: int = 240) -> bytes:
    """A plain light-grey square: LINE wants a preview picture for every video (and for
    pictures over 1 MB), and Matrix hands the bridge none it could use."""
    row = b"\x00" + b"\xdd\xdd\xdd" * size
    raw = zlib.compress(row * size, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
