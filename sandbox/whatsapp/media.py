"""Media: uploads (``POST /{phone_number_id}/media``), media the client sends, short-lived
download URLs, and the type and size limits of Meta's "Supported media types" table.

Lifetimes follow Meta's media reference: uploaded media ids live 30 days, ids received in
webhooks 7 days, and a URL from ``GET /{media_id}`` 5 minutes — all on the sandbox clock, so a
test can expire them with ``POST /control/clock``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from .clock import SandboxClock
from .errors import cloud_error, invalid_parameter
from .ids import media_id as new_media_id
from .ids import opaque_token

MB = 1024 * 1024
KB = 1024
MEDIA_URL_TTL = 5 * 60
UPLOADED_MEDIA_TTL = 30 * 24 * 3600
INBOUND_MEDIA_TTL = 7 * 24 * 3600

IMAGE_TYPES = ("image/jpeg", "image/png")
# guess: Meta's table says video/3gp while its upload error lists video/3gpp; both are taken.
VIDEO_TYPES = ("video/mp4", "video/3gpp", "video/3gp")
AUDIO_TYPES = ("audio/aac", "audio/mp4", "audio/mpeg", "audio/amr", "audio/ogg", "audio/opus")
DOCUMENT_TYPES = (
    "application/vnd.ms-powerpoint",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/pdf",
    "text/plain",
    "application/vnd.ms-excel",
)
STICKER_TYPES = ("image/webp",)
STATIC_STICKER_MAX = 100 * KB
ANIMATED_STICKER_MAX = 500 * KB

# Upload limits per MIME type (the "Supported media types" table). A webp can only be a
# sticker, so it gets the larger (animated) sticker limit at upload and the exact one at send.
UPLOAD_LIMITS: dict[str, int] = {
    **{t: 16 * MB for t in AUDIO_TYPES},
    **{t: 100 * MB for t in DOCUMENT_TYPES},
    **{t: 5 * MB for t in IMAGE_TYPES},
    "image/webp": ANIMATED_STICKER_MAX,
    **{t: 16 * MB for t in VIDEO_TYPES},
}
# What each message type may carry when sent by the business.
SENDABLE: dict[str, tuple[str, ...]] = {
    "image": IMAGE_TYPES,
    "video": VIDEO_TYPES,
    "audio": AUDIO_TYPES,
    "document": tuple(UPLOAD_LIMITS),  # guess: Meta delivers any supported type as a document
    "sticker": STICKER_TYPES,
}
MEDIA_KINDS = tuple(SENDABLE)


def base_mime(mime_type: str) -> str:
    """``"audio/ogg; codecs=opus"`` -> ``"audio/ogg"``."""
    return mime_type.split(";", 1)[0].strip().lower()


def is_animated_webp(data: bytes) -> bool:
    """An animated WebP is a RIFF/WEBP container with an ``ANIM`` chunk after ``VP8X``."""
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP" and b"ANIM" in data[12:4096]


def _size(n: int) -> str:
    return f"{n // MB} MB" if n >= MB else f"{n // KB} KB"


@dataclass
class StoredMedia:
    id: str
    data: bytes
    mime_type: str
    origin: str  # "upload" (business), "inbound" (client), "link" (fetched for a send)
    phone_number_id: str
    created_at: int
    expires_at: int
    filename: str | None = None
    sha256_hex: str = field(init=False)
    sha256_b64: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.data).digest()
        self.sha256_hex = digest.hex()
        self.sha256_b64 = base64.b64encode(digest).decode("ascii")

    @property
    def file_size(self) -> int:
        return len(self.data)

    @property
    def animated(self) -> bool:
        return is_animated_webp(self.data)


@dataclass
class DownloadToken:
    token: str
    media_id: str
    expires_at: int


class MediaExpired(Exception):
    pass


class MediaStore:
    def __init__(self, clock: SandboxClock) -> None:
        self.clock = clock
        self._media: dict[str, StoredMedia] = {}
        self._tokens: dict[str, DownloadToken] = {}

    # ------------------------------------------------------------------ storing

    def upload(self, phone_number_id: str, data: bytes, mime_type: str, filename: str | None) -> StoredMedia:
        """Check an upload the way Meta does (type list, then size), then store it."""
        mime = base_mime(mime_type)
        limit = UPLOAD_LIMITS.get(mime)
        if limit is None:
            raise invalid_parameter(
                "Param file must be a file with one of the following types: "
                f"{', '.join(UPLOAD_LIMITS)}. Received file of type '{mime}'."
            )
        if not data:
            raise cloud_error(131053, "The uploaded file is empty.")
        if len(data) > limit:
            # guess: Meta's exact wording for an oversize upload is not documented
            raise cloud_error(
                131053,
                f"File size {len(data)} bytes exceeds the {_size(limit)} limit for {mime}.",
            )
        return self._store(phone_number_id, data, mime_type, filename, "upload", UPLOADED_MEDIA_TTL)

    def add_inbound(
        self, phone_number_id: str, data: bytes, mime_type: str, filename: str | None
    ) -> StoredMedia:
        return self._store(phone_number_id, data, mime_type, filename, "inbound", INBOUND_MEDIA_TTL)

    def add_fetched(
        self, phone_number_id: str, data: bytes, mime_type: str, filename: str | None
    ) -> StoredMedia:
        return self._store(phone_number_id, data, mime_type, filename, "link", UPLOADED_MEDIA_TTL)

    def _store(
        self,
        phone_number_id: str,
        data: bytes,
        mime_type: str,
        filename: str | None,
        origin: str,
        ttl: int,
    ) -> StoredMedia:
        identifier = new_media_id()
        while identifier in self._media:
            identifier = new_media_id()
        now = self.clock.now()
        media = StoredMedia(
            id=identifier,
            data=data,
            mime_type=mime_type,
            origin=origin,
            phone_number_id=phone_number_id,
            created_at=now,
            expires_at=now + ttl,
            filename=filename,
        )
        self._media[identifier] = media
        return media

    # ------------------------------------------------------------------ reading

    def get(self, media_id: str) -> StoredMedia | None:
        """A live media id (not deleted, not past its lifetime)."""
        media = self._media.get(media_id)
        if media is None or media.expires_at <= self.clock.now():
            return None
        return media

    def stored(self, media_id: str) -> StoredMedia | None:
        """Any media ever stored, expired or not (what a client's phone keeps)."""
        return self._media.get(media_id)

    def delete(self, media_id: str) -> bool:
        return self._media.pop(media_id, None) is not None

    def issue_url(self, media: StoredMedia) -> DownloadToken:
        token = DownloadToken(opaque_token(), media.id, self.clock.now() + MEDIA_URL_TTL)
        self._tokens[token.token] = token
        return token

    def download(self, token: str) -> StoredMedia:
        """The media behind a download URL; KeyError if unknown or deleted, MediaExpired if
        the URL is older than five minutes."""
        issued = self._tokens.get(token)
        if issued is None:
            raise KeyError(token)
        if issued.expires_at <= self.clock.now():
            raise MediaExpired(token)
        media = self._media.get(issued.media_id)
        if media is None:
            raise KeyError(token)
        return media

    @property
    def count(self) -> int:
        return len(self._media)


def check_sendable(kind: str, media: StoredMedia) -> None:
    """A media object of message type ``kind`` must carry a fitting type and size."""
    mime = base_mime(media.mime_type)
    if mime not in SENDABLE[kind]:
        # guess: Meta's sync/async split for a type mismatch is not documented; 131009 is the
        # "parameter value is not valid" code it uses for bad send parameters.
        raise cloud_error(
            131009,
            f"Media of type {mime} cannot be sent as {kind}; allowed: {', '.join(SENDABLE[kind])}.",
        )
    if kind == "sticker":
        limit = ANIMATED_STICKER_MAX if media.animated else STATIC_STICKER_MAX
        if media.file_size > limit:
            which = "animated" if media.animated else "static"
            raise cloud_error(
                131009,
                f"A {which} sticker must be at most {_size(limit)}; this one is {media.file_size} bytes.",
            )
