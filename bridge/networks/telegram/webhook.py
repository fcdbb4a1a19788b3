"""Receiving Telegram updates by webhook instead of long polling.

Telegram POSTs each update to ``public_url`` and redelivers it until it gets a 2xx answer. That
is the contract the polling loop gets from the offset, so the same rule applies: answer 200 only
after ``handle`` returned (the core committed the update); a failure answers 500 and Telegram
tries again, so no update is lost. Redelivery also means an update can arrive twice (a 200 lost on
the way back, a Telegram timeout while ``handle`` was still working), hence the memory of
recently handled ``update_id``s.

The secret header is checked before anything else is read, because the endpoint is public: an
unauthenticated request must cost us neither parsing nor a place in the queue.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import Bot

from bridge.networks.telegram.config import TelegramWebhookConfig

log = logging.getLogger("houseline.telegram.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Real updates are a few KiB; Telegram caps message text at 4096 characters and sends media as
#: file ids, so anything near this is not from Telegram.
MAX_BODY = 1024 * 1024
#: Telegram redelivers only recent updates, so a few thousand ids cover every realistic retry.
REMEMBERED_UPDATES = 5000
#: How long ``stop`` lets an update in progress finish before it is cancelled (and, unanswered,
#: redelivered by Telegram later).
SHUTDOWN_GRACE = 10.0

UpdateHandler = Callable[[dict[str, Any]], Awaitable[None]]


class WebhookServer:
    """An aiohttp server on ``listen_host:listen_port`` answering POSTs on ``config.path``.

    ``handle`` gets the update as a JSON object (``Update.de_json`` is the caller's business) and
    must return only once the update is committed; it is called for one update at a time, in the
    order the requests arrived.
    """

    def __init__(
        self,
        config: TelegramWebhookConfig,
        handle: UpdateHandler,
        *,
        remember: int = REMEMBERED_UPDATES,
        shutdown_grace: float = SHUTDOWN_GRACE,
    ) -> None:
        self.config = config
        self._handle = handle
        self._secret = config.secret_token.encode("utf-8")
        self._remember = remember
        self._shutdown_grace = shutdown_grace
        self._lock = asyncio.Lock()
        self._handled: OrderedDict[int, None] = OrderedDict()
        self._runner: web.AppRunner | None = None
        #: Authenticated, well-formed updates waiting for or holding the lock (observability).
        self.queued = 0
        #: The port actually bound, once started (differs from the config only for port 0).
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the webhook server is already running")
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
        app.router.add_post(self.config.path, self._on_post)
        # handler_cancellation stays off: Telegram giving up on a request must not cancel a
        # commit half-way; the redelivery will find the update handled.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self._shutdown_grace, handler_cancellation=False
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.listen_host, self.config.listen_port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            log.error(
                "event=telegram_webhook_listen_failed host=%s port=%s error=%s "
                "fix='free the port or change networks.telegram.webhook.listen_port'",
                self.config.listen_host,
                self.config.listen_port,
                e.strerror or type(e).__name__,
            )
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info(
            "event=telegram_webhook_listening host=%s port=%s path=%s",
            self.config.listen_host,
            self.port,
            self.config.path,
        )

    async def stop(self) -> None:
        """Stop accepting; an update in progress gets ``shutdown_grace`` seconds to finish."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        log.info("event=telegram_webhook_stopped")

    # ------------------------------------------------------------------ requests

    async def _on_post(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        given = request.headers.get(SECRET_HEADER)
        # Bytes, so a non-ASCII header cannot make compare_digest raise instead of refusing.
        if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), self._secret):
            log.warning(
                "event=telegram_webhook_rejected status=403 reason=%s remote=%s",
                "missing_secret" if given is None else "wrong_secret",
                request.remote,
            )
            return _error(403, "forbidden")

        if request.content_length is not None and request.content_length > MAX_BODY:
            return _too_large(request.content_length)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # chunked, no Content-Length: caught while reading
            return _too_large(None)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            log.info("event=telegram_webhook_read_failed error=%s", type(e).__name__)
            return _error(400, "incomplete body")

        update, problem = parse_update(body)
        if update is None:
            log.warning("event=telegram_webhook_bad_body status=400 reason=%s size=%d", problem, len(body))
            return _error(400, problem)
        update_id: int = update["update_id"]

        self.queued += 1
        try:
            async with self._lock:
                if update_id in self._handled:
                    log.info("event=telegram_webhook_duplicate update_id=%s status=200", update_id)
                    return web.Response(status=200)
                try:
                    await self._handle(update)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    # Unanswered with 2xx, the update stays at Telegram and comes back.
                    log.warning(
                        "event=telegram_webhook_handle_failed update_id=%s status=500 error=%s detail=%r",
                        update_id,
                        type(e).__name__,
                        str(e)[:200],
                        exc_info=log.isEnabledFor(logging.DEBUG),
                    )
                    return _error(500, "update not handled; redeliver")
                self._mark_handled(update_id)
        finally:
            self.queued -= 1
        log.debug(
            "event=telegram_webhook_update update_id=%s status=200 duration_ms=%.1f",
            update_id,
            (time.monotonic() - started) * 1000,
        )
        # An empty body: a JSON answer could be read by Telegram as a Bot API call to run.
        return web.Response(status=200)

    def _mark_handled(self, update_id: int) -> None:
        self._handled[update_id] = None
        while len(self._handled) > self._remember:
            self._handled.popitem(last=False)

    def was_handled(self, update_id: int) -> bool:
        return update_id in self._handled


def parse_update(body: bytes) -> tuple[dict[str, Any] | None, str]:
    """The update in ``body``, or None and a short reason for the log and the 400 answer."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid utf-8"
    try:
        data = json.loads(text)
    except RecursionError:
        return None, "json nested too deeply"
    except ValueError:  # also the digit limit of huge integers
        return None, "invalid json"
    if not isinstance(data, dict):
        return None, "not a json object"
    update_id = data.get("update_id")
    if isinstance(update_id, bool) or not isinstance(update_id, int):
        return None, "no integer update_id"
    return data, ""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status, headers=headers)


def _too_large(size: int | None) -> web.Response:
    log.warning(
        "event=telegram_webhook_bad_body status=413 reason=too_large size=%s limit=%d", size, MAX_BODY
    )
    return _error(413, f"body larger than {MAX_BODY} bytes")


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths (404) and methods (405) answer JSON like the rest, without a stack trace."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        log.debug("event=telegram_webhook_unrouted status=%d method=%s", e.status, request.method)
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return _error(e.status, e.reason, allow)


async def register_webhook(
    bot: Bot,
    config: TelegramWebhookConfig,
    allowed_updates: Sequence[str],
    *,
    max_connections: int = 1,
) -> None:
    """Point Telegram at ``config.public_url``; pending updates are kept, not dropped.

    ``max_connections=1`` because Telegram otherwise opens up to 40 parallel connections, and
    the bridge wants updates one at a time and in order, as polling gives them.
    """
    await bot.set_webhook(
        url=config.public_url,
        secret_token=config.secret_token,
        allowed_updates=list(allowed_updates),
        drop_pending_updates=False,
        max_connections=max_connections,
    )
    # Host only: webhook URLs sometimes carry a secret in their path.
    log.info(
        "event=telegram_webhook_registered host=%s max_connections=%d allowed_updates=%s",
        urlsplit(config.public_url).hostname,
        max_connections,
        ",".join(allowed_updates),
    )


async def unregister_webhook(bot: Bot) -> None:
    """Back to getUpdates; updates not yet delivered stay queued at Telegram."""
    await bot.delete_webhook(drop_pending_updates=False)
    log.info("event=telegram_webhook_unregistered")
