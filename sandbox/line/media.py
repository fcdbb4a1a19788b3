"""Media: what the client's LINE app does with the URLs of messages the account sends, and the
content of media clients send.

LINE takes image, video and audio messages by URL only and answers 200 without looking at them;
the user's app then downloads the URLs. A URL that fails (HTTP error, not reachable, too big, not
JPEG/PNG, not mp4, not mp3/m4a) does not fail the API call: the user sees a broken item ("Unable
to load photo.", as bot developers report in line/line-bot-sdk-php#39 and #63, and a webp image
"sent as an error" in line/line-bot-sdk-nodejs#281). The sandbox fetches every URL once, right
after the send, and records the outcome — HTTP status, Content-Type, size, sha256 — so tests can
assert what the client really got.

Limits (reference, "Message objects"): image originalContentUrl JPEG or PNG ≤ 10 MB,
previewImageUrl JPEG or PNG ≤ 1 MB; video mp4 ≤ 200 MB with a JPEG/PNG preview ≤ 1 MB; audio mp3
or m4a ≤ 200 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes

import aiohttp

from sandbox.changes import Changes
from .state import MediaFetch, StoredMessage

log = logging.getLogger("sandbox.line.media")

MB = 1024 * 1024
IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})
VIDEO_TYPES = frozenset({"video/mp4"})
AUDIO_TYPES = frozenset({"audio/mpeg", "audio/mp3", "audio/mp4", "audio/m4a", "audio/x-m4a"})
#: (message type, role) -> (max bytes, accepted types, what LINE asks for)
RULES: dict[tuple[str, str], tuple[int, frozenset[str], str]] = {
    ("image", "original"): (10 * MB, IMAGE_TYPES, "JPEG or PNG"),
    ("image", "preview"): (1 * MB, IMAGE_TYPES, "JPEG or PNG"),
    ("video", "original"): (200 * MB, VIDEO_TYPES, "mp4"),
    ("video", "preview"): (1 * MB, IMAGE_TYPES, "JPEG or PNG"),
    ("audio", "original"): (200 * MB, AUDIO_TYPES, "mp3 or m4a"),
}
CLIENT_TYPES = {"image": "image/jpeg", "video": "video/mp4", "audio": "audio/x-m4a"}


def sniff(data: bytes) -> str | None:
    """The media type the bytes look like (the app looks at bytes when headers lie)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "audio/x-m4a" if brand.startswith(b"M4A") else "video/mp4"
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    return None


def file_type(file_name: str) -> str:
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"


class MediaFetcher:
    """Fetches the URLs of sent media in the background, one task per message."""

    def __init__(self, changes: Changes, timeout: float = 10.0) -> None:
        self.changes = changes
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._session is None:
            # guess: the app's User-Agent; LINE does not document what fetches media URLs.
            self._session = aiohttp.ClientSession(headers={"User-Agent": "LINE-sandbox-client"})

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def schedule(self, message: StoredMessage) -> None:
        """Record and fetch ``message``'s URLs (no-op for messages without media)."""
        urls = [("original", message.content.get("originalContentUrl"))]
        if message.type in ("image", "video"):
            urls.append(("preview", message.content.get("previewImageUrl")))
        if message.type not in ("image", "video", "audio"):
            return
        message.media = [MediaFetch(role, url) for role, url in urls if isinstance(url, str)]
        task = asyncio.create_task(self._fetch_all(message), name=f"line-media-{message.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_all(self, message: StoredMessage) -> None:
        await asyncio.gather(*(self._fetch(message.type, record) for record in message.media))
        log.info(
            "event=media_fetched message_id=%s results=%s",
            message.id,
            ",".join(f"{m.role}:{m.state}:{m.problem or 'ok'}" for m in message.media),
        )
        self.changes.notify()

    async def _fetch(self, kind: str, record: MediaFetch) -> None:
        limit, accepted, wanted = RULES[(kind, record.role)]
        if self._session is None:
            record.state, record.problem = "failed", "the sandbox stopped"
            return
        try:
            async with self._session.get(
                record.url, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                record.status = response.status
                record.content_type = response.headers.get("Content-Type")
                data = await response.content.read(limit + 1)
        except TimeoutError:
            record.state, record.problem = "failed", "timed out"
            return
        except aiohttp.ClientError as exc:
            record.state, record.problem = "failed", f"could not connect: {type(exc).__name__}"
            return
        if record.status != 200:
            record.state, record.problem = "failed", f"HTTP {record.status}"
            return
        record.state = "fetched"
        record.size = len(data)
        record.sha256 = hashlib.sha256(data).hexdigest()
        record.data = data
        if len(data) > limit:
            record.size = None
            record.sha256 = None
            record.problem = f"larger than {limit // MB} MB"
            return
        declared = (record.content_type or "").split(";")[0].strip().lower()
        if declared not in accepted and sniff(data) not in accepted:
            record.problem = f"not {wanted} (Content-Type {declared or 'missing'})"
