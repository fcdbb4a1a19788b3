"""getUpdates, setWebhook, deleteWebhook and getWebhookInfo, and the delivery of updates to a
webhook.

Delivery follows the documented behaviour: each update is POSTed as JSON to the URL with the
``X-Telegram-Bot-Api-Secret-Token`` header (if a secret was set); a non-2xx answer or a
connection failure leaves the update pending and it is retried with growing delays, shown in
getWebhookInfo as ``last_error_date``/``last_error_message``. The webhook's answer may itself be
a Bot API call (``{"method": ..., ...}``), which is executed. Updates go out one at a time, in
order (Telegram may use up to ``max_connections`` in parallel).

Webhook URLs often carry the bot token as a secret path, so logs show the host only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .api_base import ApiBase, Described, Handler
from .errors import (
    SECRET_TOKEN_INVALID,
    SECRET_TOKEN_TOO_LONG,
    TERMINATED_BY_OTHER_POLL,
    TERMINATED_BY_SET_WEBHOOK,
    WEBHOOK_ACTIVE,
    ApiError,
    bad_request,
    conflict,
)
from .params import Params
from .state import SandboxState
from .updates import Update

log = logging.getLogger("sandbox.telegram.webhook")

LONG_POLL_MAX_TIMEOUT = 50
WEBHOOK_PORTS = frozenset({80, 88, 443, 8443})
SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]*")
MAX_SECRET_TOKEN = 256
DEFAULT_MAX_CONNECTIONS = 40

Executor = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret_token: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    ip_address: str | None = None
    certificate: bytes | None = None
    allowed_updates: tuple[str, ...] | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"


@dataclass
class WebhookSettings:
    """Knobs of the sandbox's deliverer. ``allow_local`` accepts ``http://`` and any port, so
    tests can point the webhook at a local server (Telegram itself insists on HTTPS and ports
    80, 88, 443 or 8443)."""

    allow_local: bool = False
    retry_initial: float = 1.0
    retry_max: float = 60.0
    timeout: float = 10.0


class WebhookDelivery:
    """Posts pending updates to the configured webhook while the sandbox runs."""

    def __init__(self, state: SandboxState, settings: WebhookSettings, execute: Executor) -> None:
        self.state = state
        self.settings = settings
        self.execute = execute
        self.config: WebhookConfig | None = None
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self.delivered = 0
        self._running = False
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def configure(self, config: WebhookConfig | None) -> None:
        await self._stop_task()
        self.config = config
        self.state.webhook_url = config.url if config else ""
        if config is None:
            self.last_error_date = None
            self.last_error_message = None
        self._start_task()

    async def start(self) -> None:
        self._running = True
        self._start_task()

    async def stop(self) -> None:
        self._running = False
        await self._stop_task()

    def _start_task(self) -> None:
        if self._running and self.config is not None and self._task is None:
            self._task = asyncio.create_task(self._run(self.config), name="webhook-delivery")

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    # ------------------------------------------------------------------ delivery

    async def _run(self, config: WebhookConfig) -> None:
        queue = self.state.updates
        failures = 0
        ssl_context = _ssl_context(config)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await queue.wait_pending()
                update = queue.peek(1)[0]
                error = await self._post(session, config, update, ssl_context)
                if error is None:
                    queue.confirm_below(update.update_id + 1)
                    self.delivered += 1
                    failures = 0
                    continue
                failures += 1
                self.last_error_date = self.state.now()
                self.last_error_message = error
                delay = min(self.settings.retry_max, self.settings.retry_initial * 2 ** (failures - 1))
                log.info(
                    "event=webhook_delivery_failed host=%s update_id=%d attempt=%d retry_in_s=%.2f error=%r",
                    config.host,
                    update.update_id,
                    failures,
                    delay,
                    error,
                )
                await asyncio.sleep(delay)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        config: WebhookConfig,
        update: Update,
        ssl_context: ssl.SSLContext | bool,
    ) -> str | None:
        """POST one update; None on a 2xx answer, else getWebhookInfo's error message."""
        headers = {"Content-Type": "application/json"}
        if config.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = config.secret_token
        try:
            async with session.post(
                config.url, json=update.to_json(), headers=headers, ssl=ssl_context
            ) as response:
                if not 200 <= response.status < 300:
                    return f"Wrong response from the webhook: {response.status} {response.reason}"
                reply = await response.read()
                content_type = response.content_type
        except TimeoutError:
            return "Read timeout expired"
        except aiohttp.ClientConnectorCertificateError as exc:
            return f"SSL error {exc.certificate_error}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return "Connection refused"
            return f"Connection failed: {exc.os_error}"
        except aiohttp.ClientError as exc:
            return f"Connection failed: {type(exc).__name__}"
        log.debug("event=webhook_delivered host=%s update_id=%d", config.host, update.update_id)
        if content_type == "application/json" and reply.strip():
            await self._run_reply(reply)
        return None

    async def _run_reply(self, reply: bytes) -> None:
        """ "You can perform a request to the Bot API while sending an answer to the webhook";
        like Telegram, the bot never learns the outcome."""
        try:
            body = json.loads(reply)
        except ValueError:
            return
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            return
        method = body.pop("method")
        try:
            await self.execute(method, body)
            log.info("event=webhook_reply_executed method=%s", method)
        except ApiError as exc:
            log.info("event=webhook_reply_failed method=%s status=%d", method, exc.error_code)


def _ssl_context(config: WebhookConfig) -> ssl.SSLContext | bool:
    """A self-signed certificate uploaded with setWebhook is trusted for this webhook."""
    if not config.url.lower().startswith("https://"):
        return False
    context = ssl.create_default_context()
    if config.certificate:
        try:
            context.load_verify_locations(cadata=config.certificate.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            log.info("event=webhook_certificate_unusable host=%s", config.host)
    return context


class WebhookMethods(ApiBase):
    webhook: WebhookDelivery

    def webhook_handlers(self) -> dict[str, Handler]:
        return {
            "getUpdates": self.get_updates,
            "setWebhook": self.set_webhook,
            "deleteWebhook": self.delete_webhook,
            "getWebhookInfo": self.get_webhook_info,
        }

    async def get_updates(self, params: Params) -> Any:
        queue = self.state.updates
        offset = params.get_int("offset", 0) or 0
        limit = params.get_int("limit", 100, lo=1, hi=100) or 100
        timeout = params.get_int("timeout", 0, lo=0, hi=LONG_POLL_MAX_TIMEOUT) or 0
        allowed = self._allowed_updates(params)
        queue.interrupt_poll()
        if self.state.webhook_url:
            raise conflict(WEBHOOK_ACTIVE)
        if allowed is not None:
            queue.set_allowed(allowed)
        if offset < 0:
            queue.keep_last(-offset)
        elif offset > 0:
            queue.confirm_below(offset)
        if queue.pending_count == 0 and timeout > 0:
            outcome = await queue.wait(timeout)
            if outcome == "conflict":
                raise conflict(TERMINATED_BY_OTHER_POLL)
            if outcome == "webhook":
                raise conflict(TERMINATED_BY_SET_WEBHOOK)
        return [update.to_json() for update in queue.peek(limit)]

    @staticmethod
    def _allowed_updates(params: Params) -> list[str] | None:
        allowed = params.get_json("allowed_updates", "allowed updates")
        if allowed is not None and (
            not isinstance(allowed, list) or not all(isinstance(x, str) for x in allowed)
        ):
            raise bad_request("can't parse allowed updates JSON object")
        return allowed

    async def set_webhook(self, params: Params) -> Any:
        url = (params.get_str("url") or "").strip()
        if not url:
            return await self.delete_webhook(params)
        self._check_url(url)
        secret = params.get_str("secret_token") or ""
        if len(secret) > MAX_SECRET_TOKEN:
            raise bad_request(SECRET_TOKEN_TOO_LONG)
        if not SECRET_TOKEN_RE.fullmatch(secret):
            raise bad_request(SECRET_TOKEN_INVALID)
        max_connections = (
            params.get_int("max_connections", DEFAULT_MAX_CONNECTIONS, lo=1, hi=100)
            or DEFAULT_MAX_CONNECTIONS
        )
        allowed = self._allowed_updates(params)
        certificate = params.files.get("certificate")
        config = WebhookConfig(
            url=url,
            secret_token=secret or None,
            max_connections=max_connections,
            ip_address=(params.get_str("ip_address") or "").strip() or None,
            certificate=certificate.content if certificate else None,
            allowed_updates=tuple(allowed) if allowed is not None else None,
        )
        if allowed is not None:
            self.state.updates.set_allowed(allowed)
        if params.get_bool("drop_pending_updates"):
            self.state.updates.drop_pending()
        if self.webhook.config == config:
            return Described(True, "Webhook is already set")
        self.state.updates.interrupt_poll("webhook")  # a waiting getUpdates ends with 409
        await self.webhook.configure(config)
        log.info(
            "event=webhook_set host=%s secret=%s max_connections=%d",
            config.host,
            "yes" if config.secret_token else "no",
            max_connections,
        )
        return Described(True, "Webhook was set")

    def _check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise bad_request("bad webhook: Wrong port number specified in the URL") from None
        scheme = parts.scheme.lower()
        if not parts.hostname:
            raise bad_request("bad webhook: Wrong HTTP URL specified")
        if self.webhook.settings.allow_local:
            if scheme not in ("http", "https"):
                raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
            return
        if scheme != "https":
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if (port or 443) not in WEBHOOK_PORTS:
            raise bad_request("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")

    async def delete_webhook(self, params: Params) -> Any:
        if params.get_bool("drop_pending_updates"):
            self.state.updates.drop_pending()
        was_set = self.webhook.config is not None
        await self.webhook.configure(None)
        if was_set:
            log.info("event=webhook_deleted")
        return Described(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def get_webhook_info(self, params: Params) -> Any:
        config = self.webhook.config
        info: dict[str, Any] = {
            "url": config.url if config else "",
            "has_custom_certificate": bool(config and config.certificate),
            "pending_update_count": self.state.updates.pending_count,
        }
        if config is None:
            return info
        if config.ip_address:
            info["ip_address"] = config.ip_address
        if self.webhook.last_error_date is not None:
            info["last_error_date"] = self.webhook.last_error_date
            info["last_error_message"] = self.webhook.last_error_message
        info["max_connections"] = config.max_connections
        if config.allowed_updates is not None:
            info["allowed_updates"] = list(config.allowed_updates)
        return info
