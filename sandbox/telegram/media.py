"""Media the way Telegram stores it: file kinds with their own file_id prefixes and download
directories, photos measured, checked and re-encoded into several JPEG sizes, MIME types guessed
from file names.

A bridge that forwards photos has to cope with Telegram handing back *its* JPEG sizes, not the
bytes it uploaded; the sandbox reproduces that (with Pillow, which the test and demo extras pull
in). Without Pillow it still measures PNG/JPEG/GIF/WebP headers but keeps the original bytes.
"""

from __future__ import annotations

import io
import mimetypes
import struct
from dataclasses import dataclass
from typing import Any

try:  # Pillow comes with the test/demo extras (Synapse depends on it), not the bridge itself.
    from PIL import Image, UnidentifiedImageError
except ImportError:  # pragma: no cover - exercised only where Pillow is missing
    Image = None  # type: ignore[assignment]
    UnidentifiedImageError = OSError  # type: ignore[assignment,misc]

MAX_PHOTO_UPLOAD = 10 * 1024 * 1024  # sendPhoto: "The photo must be at most 10 MB in size."
MAX_PHOTO_SIDES_SUM = 10_000  # "width and height must not exceed 10000 in total"
MAX_PHOTO_RATIO = 20  # "Width and height ratio must be at most 20."
# Telegram's photo size boxes ("s", "m", "x", "y"): each size fits its box, none is upscaled.
PHOTO_BOXES = (90, 320, 800, 1280)
JPEG_QUALITY = 87


class MediaError(ValueError):
    """Content Telegram would refuse; ``args[0]`` is the Bot API detail after ``Bad Request: ``."""


@dataclass(frozen=True)
class FileKind:
    """How one kind of file is named on Telegram's side."""

    name: str
    directory: str
    default_extension: str
    file_id_prefix: str  # real file_ids start with the kind's type byte, base64url-encoded
    default_mime: str | None


FILE_KINDS: dict[str, FileKind] = {
    kind.name: kind
    for kind in (
        FileKind("photo", "photos", ".jpg", "AgACAgIAAxkBAAI", None),
        FileKind("document", "documents", "", "BQACAgIAAxkBAAI", None),
        FileKind("video", "videos", ".mp4", "BAACAgIAAxkBAAI", "video/mp4"),
        FileKind("animation", "animations", ".mp4", "CgACAgIAAxkBAAI", "video/mp4"),
        FileKind("audio", "music", ".mp3", "CQACAgIAAxkBAAI", "audio/mpeg"),
        FileKind("voice", "voice", ".oga", "AwACAgIAAxkBAAI", "audio/ogg"),
        FileKind("video_note", "video_notes", ".mp4", "DQACAgIAAxkBAAI", None),
        FileKind("sticker", "stickers", ".webp", "CAACAgIAAxkBAAI", None),
    )
}
# Kinds a message can carry a caption on (video notes and stickers cannot have one).
CAPTIONED_KINDS = frozenset({"photo", "document", "video", "animation", "audio", "voice"})
# Which ``Message`` field each kind fills; the Bot API's own type names in error messages.
TYPE_NAMES = {
    "photo": "Photo",
    "document": "Document",
    "video": "Video",
    "animation": "Animation",
    "audio": "Audio",
    "voice": "VoiceNote",
    "video_note": "VideoNote",
    "sticker": "Sticker",
}


def guess_mime(file_name: str | None) -> str | None:
    if not file_name:
        return None
    guessed, _ = mimetypes.guess_type(file_name, strict=False)
    return guessed


def extension_of(file_name: str | None, kind: FileKind) -> str:
    """The extension Telegram keeps in ``file_path``: the sent name's, else the kind's."""
    if file_name and "." in file_name:
        suffix = "".join(c for c in file_name.rsplit(".", 1)[1] if c.isalnum())[:10]
        if suffix:
            return "." + suffix.lower()
    return kind.default_extension


# --------------------------------------------------------------------------- images


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of an image, or None when the bytes are not an image."""
    if Image is not None:
        try:
            with Image.open(io.BytesIO(data)) as image:
                return int(image.width), int(image.height)
        except (UnidentifiedImageError, OSError, ValueError):
            return None
    return _header_size(data)


def _header_size(data: bytes) -> tuple[int, int] | None:
    """PNG, GIF, WebP and JPEG dimensions from their headers (the fallback without Pillow)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            width = int.from_bytes(data[24:27], "little") + 1
            return width, int.from_bytes(data[27:30], "little") + 1
    if data.startswith(b"\xff\xd8"):
        index = 2
        while index + 9 < len(data):
            if data[index] != 0xFF:
                index += 1
                continue
            marker = data[index + 1]
            length = int.from_bytes(data[index + 2 : index + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
                height, width = struct.unpack(">HH", data[index + 5 : index + 9])
                return int(width), int(height)
            index += 2 + length
    return None


@dataclass
class PhotoSizeData:
    width: int
    height: int
    content: bytes


def photo_sizes(data: bytes) -> list[PhotoSizeData]:
    """The sizes Telegram would keep for an uploaded photo, smallest first.

    Raises MediaError with Telegram's wording for what sendPhoto refuses.
    """
    if len(data) > MAX_PHOTO_UPLOAD:
        raise MediaError("PHOTO_SAVE_FILE_INVALID")
    size = image_size(data)
    if size is None:
        raise MediaError("IMAGE_PROCESS_FAILED")
    width, height = size
    if (
        width <= 0
        or height <= 0
        or width + height > MAX_PHOTO_SIDES_SUM
        or max(width, height) > MAX_PHOTO_RATIO * min(width, height)
    ):
        raise MediaError("PHOTO_INVALID_DIMENSIONS")
    longest = max(width, height)
    sizes: list[PhotoSizeData] = []
    previous_box = 0
    for box in PHOTO_BOXES:
        if longest <= previous_box:
            break
        scale = min(1.0, box / longest)
        target = (max(1, int(width * scale)), max(1, int(height * scale)))
        sizes.append(PhotoSizeData(target[0], target[1], _jpeg(data, target)))
        previous_box = box
    return sizes


def _jpeg(data: bytes, target: tuple[int, int]) -> bytes:
    """The image re-encoded as a JPEG of ``target`` size (the original bytes without Pillow)."""
    if Image is None:
        return data
    with Image.open(io.BytesIO(data)) as image:
        converted = image.convert("RGB")
        if converted.size != target:
            converted = converted.resize(target, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        converted.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()


def sticker_shape(data: bytes, file_name: str | None, mime_type: str | None) -> dict[str, Any]:
    """``is_animated``/``is_video`` and the size of an uploaded sticker file.

    .TGS (gzip Lottie) is animated, .WEBM is a video sticker, anything else a static WebP/PNG.
    """
    name = (file_name or "").lower()
    is_animated = name.endswith(".tgs") or data[:2] == b"\x1f\x8b"
    is_video = name.endswith(".webm") or mime_type == "video/webm" or data[:4] == b"\x1aE\xdf\xa3"
    width, height = 512, 512
    if not is_animated and not is_video:
        measured = image_size(data)
        if measured is None:
            raise MediaError("STICKER_FILE_INVALID")
        width, height = measured
    return {"width": width, "height": height, "is_animated": is_animated, "is_video": is_video}
