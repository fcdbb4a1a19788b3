"""What stands in for a company's other systems in the demo: a webhook receiver (a CRM) and an
SMTP archive, each writing what it receives into a folder a person can look at.

The receiver verifies every delivery's signature the way the README tells integrators to, and
files it as ``<n>-<type>.json`` (with ``"signature_valid"``); the archive is a real SMTP server
(aiosmtpd) that files each journal message as ``<n>.eml``. Neither shares code with the bridge.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from pathlib import Path

from aiohttp import web


class WebhookReceiver:
    def __init__(self, folder: Path, secret: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = folder
        self.secret = secret
        self.host, self.port = host, port
        self._count = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/houseline"

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        app = web.Application()
        app.router.add_post("/houseline", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _valid(self, request: web.Request, raw: bytes) -> bool:
        timestamp = request.headers.get("X-Houseline-Timestamp", "")
        signature = request.headers.get("X-Houseline-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return False
        expected = (
            "sha256="
            + hmac.new(self.secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
        )
        return hmac.compare_digest(expected, signature)

    async def _receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        valid = self._valid(request, raw)
        try:
            event = json.loads(raw)
        except ValueError:
            return web.json_response({"error": "not json"}, status=400)
        kind = str(event.get("type", "unknown")).replace("/", "_")
        record = {
            "signature_valid": valid,
            "delivery": request.headers.get("X-Houseline-Delivery"),
            "event": event,
        }
        (self.folder / f"{next(self._count):04d}-{kind}.json").write_text(
            json.dumps(record, indent=2, ensure_ascii=False)
        )
        return (
            web.json_response({"ok": True})
            if valid
            else web.json_response({"error": "bad signature"}, status=403)
        )


class SmtpArchive:
    """aiosmtpd on loopback, accepting everything for the journal address into ``folder``."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = folder
        self.host, self.port = host, port
        self._count = itertools.count(1)
        self._controller = None

    async def start(self) -> None:
        from aiosmtpd.controller import Controller

        from sandbox.homeserver import free_port

        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()

    async def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's handler hook
        (self.folder / f"{next(self._count):04d}.eml").write_bytes(
            envelope.original_content or envelope.content
        )
        return "250 Message accepted for delivery"
