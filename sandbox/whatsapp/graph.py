"""The Graph API surface of the Cloud API that the bridge uses, at
``/{version}/{object-id}[/{edge}]`` like ``graph.facebook.com``:

- ``POST /{phone_number_id}/messages`` — send, or mark as read (+ typing indicator)
- ``POST /{phone_number_id}/media`` — upload
- ``GET /{media_id}`` — a 5-minute download URL; ``DELETE /{media_id}``
- ``GET /{waba_id}/message_templates``
- ``GET /{phone_number_id}``, ``GET /{waba_id}/phone_numbers`` — number facts

plus ``GET /media-download/<opaque>``, the URLs ``GET /{media_id}`` hands out. Every call needs
``Authorization: Bearer <access token>`` (or ``?access_token=``).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from .errors import (
    GraphError,
    cloud_error,
    invalid_parameter,
    invalid_token,
    missing_parameter,
    unknown_object,
)
from .faults import FaultPlan
from .media import MediaExpired, MediaStore
from .messaging import Messaging
from .state import SandboxNumber, SandboxState
from .templates import TemplateCatalog

log = logging.getLogger("sandbox.whatsapp.graph")

VERSION_PATTERN = r"v\d+\.\d+"
MAX_JSON_BODY = 1024 * 1024


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def graph_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


class GraphApi:
    def __init__(
        self,
        access_token: str,
        state: SandboxState,
        media: MediaStore,
        catalog: TemplateCatalog,
        messaging: Messaging,
        faults: FaultPlan,
        base_url: Callable[[], str],
    ) -> None:
        self.access_token = access_token
        self.state = state
        self.media = media
        self.catalog = catalog
        self.messaging = messaging
        self.faults = faults
        self.base_url = base_url

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/media-download/{token}", self._guard("media", self.download))
        app.router.add_route(
            "*", "/{version:" + VERSION_PATTERN + "}/{object_id}", self._guard(None, self.node)
        )
        app.router.add_route(
            "*",
            "/{version:" + VERSION_PATTERN + "}/{object_id}/{edge}",
            self._guard(None, self.edge),
        )

    # ------------------------------------------------------------------ plumbing

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = (
            header[7:].strip() if header[:7].lower() == "bearer " else request.query.get("access_token", "")
        )
        return bool(token) and hmac.compare_digest(token.encode(), self.access_token.encode())

    def _guard(
        self, fault_path: str | None, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Auth, injected faults, and Meta-shaped errors around every Graph handler."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            started = time.monotonic()
            try:
                if not self._authorized(request):
                    raise invalid_token()
                path = fault_path or self._fault_path(request)
                fault = self.faults.take(path)
                if fault is not None:
                    log.info("event=fault_injected path=%s code=%d", path, fault.code)
                    raise fault
                response = await handler(request)
            except GraphError as exc:
                response = graph_response(exc.body(), exc.status)
            except Exception:  # a sandbox bug must answer, not kill the connection
                log.exception("event=graph_crash path=%s", request.path)
                response = graph_response(cloud_error(1, "Internal sandbox error.", status=500).body(), 500)
            log.info(
                "event=graph_call method=%s path=%s status=%d duration_ms=%.1f",
                request.method,
                request.path if fault_path != "media" else "/media-download/…",
                response.status,
                (time.monotonic() - started) * 1000,
            )
            return response

        return guarded

    def _fault_path(self, request: web.Request) -> str:
        edge = request.match_info.get("edge")
        object_id = request.match_info.get("object_id", "")
        if edge == "messages":
            return "messages"
        if edge == "media" or (edge is None and self.media.stored(object_id) is not None):
            return "media"
        if edge == "message_templates":
            return "templates"
        return "phone_numbers"

    def _number(self, request: web.Request) -> SandboxNumber:
        object_id = request.match_info["object_id"]
        number = self.state.numbers.get(object_id)
        if number is None:
            raise unknown_object(object_id, request.method)
        return number

    # ------------------------------------------------------------------ nodes

    async def node(self, request: web.Request) -> web.StreamResponse:
        object_id = request.match_info["object_id"]
        if request.method == "GET":
            number = self.state.numbers.get(object_id)
            if number is not None:
                return graph_response(self.state.describe_number(number))
            if object_id == self.state.waba_id:
                return graph_response({"id": self.state.waba_id, "name": "Sandbox WhatsApp Business Account"})
            media = self.media.get(object_id)
            if media is not None:
                token = self.media.issue_url(media)
                return graph_response(
                    {
                        "messaging_product": "whatsapp",
                        "url": f"{self.base_url()}/media-download/{token.token}",
                        "mime_type": media.mime_type,
                        "sha256": media.sha256_hex,  # guess: hex here, base64 in webhooks
                        "file_size": media.file_size,  # guess: an integer, as live answers show
                        "id": media.id,
                    }
                )
        elif request.method == "DELETE" and self.media.get(object_id) is not None:
            self.media.delete(object_id)
            return graph_response({"success": True})
        raise unknown_object(object_id, request.method)

    async def edge(self, request: web.Request) -> web.StreamResponse:
        edge = request.match_info["edge"]
        method = request.method
        object_id = request.match_info["object_id"]
        if edge == "messages" and method == "POST":
            return await self.send(request)
        if edge == "media" and method == "POST":
            return await self.upload(request)
        if edge == "message_templates" and method == "GET":
            return self.templates(request)
        if edge == "phone_numbers" and method == "GET" and object_id == self.state.waba_id:
            return graph_response(
                {"data": [self.state.describe_number(n) for n in self.state.numbers.values()], "paging": {}}
            )
        if object_id in self.state.numbers or object_id == self.state.waba_id:
            raise GraphError(
                status=400,
                code=100,
                message=f"(#100) Tried accessing nonexisting field ({edge}) on node type "
                f"({'WhatsAppBusinessPhoneNumber' if object_id in self.state.numbers else 'WhatsAppBusinessAccount'})",
            )
        raise unknown_object(object_id, method)

    # ------------------------------------------------------------------ messages

    async def send(self, request: web.Request) -> web.StreamResponse:
        number = self._number(request)
        raw = await request.content.read(MAX_JSON_BODY + 1)
        if len(raw) > MAX_JSON_BODY:
            raise invalid_parameter("Invalid parameter", "The request body is too large.")
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError):
            # guess: the sandbox reads JSON bodies only (Graph also takes form parameters)
            raise invalid_parameter("Invalid parameter", "The request body is not valid JSON.") from None
        return graph_response(self.messaging.business_send(number, body))

    # ------------------------------------------------------------------ media

    async def upload(self, request: web.Request) -> web.StreamResponse:
        number = self._number(request)
        if request.content_type != "multipart/form-data":
            raise missing_parameter("file")
        fields: dict[str, str] = {}
        data: bytes | None = None
        filename: str | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                data = bytes(await part.read(decode=False))
                filename = part.filename
            elif part.name:
                fields[part.name] = (await part.read(decode=True)).decode("utf-8", "replace")
        if not fields.get("messaging_product"):
            raise missing_parameter("messaging_product")
        if fields["messaging_product"] != "whatsapp":
            raise invalid_parameter("Param messaging_product must be one of {WHATSAPP}.")
        if data is None:
            raise missing_parameter("file")
        if not fields.get("type"):
            raise missing_parameter("type")
        stored = self.media.upload(number.phone_number_id, data, fields["type"], filename)
        log.info("event=media_uploaded media_id=%s size=%d", stored.id, stored.file_size)
        return graph_response({"id": stored.id})

    async def download(self, request: web.Request) -> web.StreamResponse:
        try:
            media = self.media.download(request.match_info["token"])
        except (KeyError, MediaExpired):
            # guess: Meta's media host answers an expired or unknown URL with 404
            raise GraphError(
                status=404, code=100, message="(#100) The media URL is invalid or has expired."
            ) from None
        headers = {"Content-Type": media.mime_type}
        if media.filename:
            headers["Content-Disposition"] = f'attachment; filename="{media.filename}"'
        return web.Response(body=media.data, headers=headers)

    # ------------------------------------------------------------------ templates

    def templates(self, request: web.Request) -> web.StreamResponse:
        object_id = request.match_info["object_id"]
        if object_id != self.state.waba_id:
            raise unknown_object(object_id, "GET")
        data = self.catalog.list(request.query.get("name"), request.query.get("status"))
        try:
            limit = int(request.query.get("limit", "0"))
        except ValueError:
            raise invalid_parameter("Param limit must be an integer.") from None
        if limit > 0:
            data = data[:limit]
        return graph_response(
            {"data": data, "paging": {"cursors": {"before": "QVFIUmJlZAZDZD", "after": "QVFIUmFmdGVyZAZDZD"}}}
        )
