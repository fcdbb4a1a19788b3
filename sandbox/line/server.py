"""The sandbox server: LINE's Messaging API at ``/v2/bot/...`` (the paths of both
``api.line.me`` and ``api-data.line.me``, on one base URL), LINE's CDN for profile pictures at
``/profile-pictures/...``, and the control API at ``/client/...``, ``/groups/...`` and
``/control/...`` (see sandbox/line/README.md).

The bridge talks to it with the same HTTP calls it makes to LINE — only the base URLs differ —
and receives webhooks signed with the channel secret, so what is tested is the code path that
runs against LINE.
"""

from __future__ import annotations

import logging
from typing import Any, Self

from aiohttp import web

from . import ids
from .api import BotApiRouter
from .api_chats import ChatsApi
from .api_messages import MessagingApi
from .api_webhook import WebhookApi
from .clock import SandboxClock
from .control import ClientControl
from .control_groups import GroupControl
from .control_knobs import KnobsControl
from .events import Events
from .faults import FaultPlan
from .media import MediaFetcher
from .messaging import Messaging
from .pictures import ProfilePictures
from .ratelimit import RateLimiter
from .state import BotIdentity, SandboxState
from .webhook import WebhookDispatcher

log = logging.getLogger("sandbox.line")

MAX_REQUEST_BODY = 80 * 1024 * 1024  # control uploads: 50 MB of base64 plus overhead


class LineSandbox:
    """A local stand-in for ``api.line.me`` and ``api-data.line.me`` serving one Messaging API
    channel (one LINE Official Account).

    ``channel_access_token`` is the only Bearer token the API accepts; ``channel_secret`` keys
    the ``x-line-signature`` of every webhook. ``rate_limits`` enforces LINE's per-endpoint
    limits (``rate_limit_overrides`` replaces some, e.g. ``{"POST /v2/bot/chat/loading/start":
    (3, 1.0)}``). ``quota`` is the monthly target limit (None: no limit, ``type: none``).
    ``reply_token_validity`` (60 s), ``reply_token_redelivery_limit`` (20 min) and
    ``retry_key_validity`` (24 h) are LINE's documented windows, in sandbox-clock seconds.
    Webhooks time out after ``webhook_timeout`` (2 s) and failed ones are redelivered every
    ``webhook_retry_interval`` seconds up to ``webhook_max_redeliveries`` times while
    ``webhook_redelivery`` is on. ``content_retention`` (None: forever) is how long Get content
    serves what clients sent.
    """

    def __init__(
        self,
        channel_access_token: str,
        channel_secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limits: bool = True,
        *,
        bot_user_id: str | None = None,
        basic_id: str | None = None,
        display_name: str = "Houseline Sandbox",
        picture_url: str | None = None,
        chat_mode: str = "bot",
        quota: int | None = None,
        reply_token_validity: float = 60.0,
        reply_token_redelivery_limit: float = 20 * 60.0,
        retry_key_validity: float = 24 * 3600.0,
        webhook_endpoint: str | None = None,
        webhook_timeout: float = 2.0,
        webhook_redelivery: bool = True,
        webhook_retry_interval: float = 1.0,
        webhook_max_redeliveries: int = 5,
        webhook_max_events: int = 20,
        media_fetch_timeout: float = 10.0,
        content_retention: float | None = None,
        rate_limit_overrides: dict[str, tuple[int, float]] | None = None,
    ) -> None:
        if not channel_access_token:
            raise ValueError("channel_access_token must not be empty")
        if not channel_secret:
            raise ValueError("channel_secret must not be empty")
        if chat_mode not in ("chat", "bot"):
            raise ValueError('chat_mode is "chat" (chat on) or "bot" (chat off)')
        user_id = bot_user_id or ids.random_user_id()
        if not ids.USER_ID.fullmatch(user_id):
            raise ValueError("bot_user_id must look like U + 32 hex digits")
        self.channel_access_token = channel_access_token
        self.channel_secret = channel_secret
        self.host = host
        self.port = port
        self.clock = SandboxClock()
        bot = BotIdentity(user_id, basic_id or ids.basic_id(), display_name, picture_url, chat_mode)
        self.state = SandboxState(bot, self.clock, quota)
        self.limiter = RateLimiter(rate_limits, rate_limit_overrides)
        self.faults = FaultPlan()
        self.fetcher = MediaFetcher(self.state.changes, media_fetch_timeout)
        self.events: Events  # set below; the dispatcher reports sends to it
        self.webhooks = WebhookDispatcher(
            channel_secret,
            user_id,
            self.clock,
            self.state.changes,
            lambda events, redelivery: self.events.mark_sent(events, redelivery),
            timeout=webhook_timeout,
            redelivery=webhook_redelivery,
            retry_interval=webhook_retry_interval,
            max_redeliveries=webhook_max_redeliveries,
            max_events=webhook_max_events,
        )
        if webhook_endpoint is not None:
            self.webhooks.endpoint = webhook_endpoint
        self.events = Events(self.state, self.webhooks)
        self.messaging = Messaging(
            self.state,
            self.fetcher,
            reply_token_validity=reply_token_validity,
            reply_token_redelivery_limit=reply_token_redelivery_limit,
            retry_key_validity=retry_key_validity,
        )
        self.router = BotApiRouter(channel_access_token, self.limiter, self.faults)
        self.messaging_api = MessagingApi(self.state, self.messaging)
        self.chats_api = ChatsApi(self.state, self.events, content_retention)
        self.webhook_api = WebhookApi(self.webhooks)
        self.client_control = ClientControl(self.state, self.events)
        self.group_control = GroupControl(self.state, self.events)
        self.pictures = ProfilePictures(self.state)
        self.knobs = KnobsControl(self.state, self.webhooks, self.faults, self.limiter, channel_secret)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ properties

    @property
    def bot_user_id(self) -> str:
        return self.state.bot.user_id

    @property
    def api_url(self) -> str:
        """The base URL to use instead of ``https://api.line.me``."""
        assert self.url is not None, "start the sandbox first"
        return self.url

    @property
    def data_url(self) -> str:
        """The base URL to use instead of ``https://api-data.line.me`` (the same server)."""
        return self.api_url

    @property
    def rate_limits(self) -> bool:
        return self.limiter.enabled

    @rate_limits.setter
    def rate_limits(self, enabled: bool) -> None:
        self.limiter.enabled = enabled

    @property
    def webhook_endpoint(self) -> str | None:
        return self.webhooks.endpoint

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        self.state.changes.closed = False
        await self.fetcher.start()
        await self.webhooks.start()
        log.info("event=sandbox_started url=%s bot_user_id=%s", self.url, self.bot_user_id)

    async def stop(self) -> None:
        """Answer pending long polls, stop webhook delivery and media fetches, close every
        connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.state.changes.close()
        await self.webhooks.stop()
        await self.fetcher.stop()
        await runner.cleanup()
        log.info("event=sandbox_stopped url=%s", self.url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ test helpers

    def advance_clock(self, seconds: float) -> float:
        """Move the sandbox clock forward (same as ``POST /control/clock``)."""
        now = self.clock.advance(seconds)
        self.state.changes.notify()
        return now

    def set_quota(self, limit: int | None, usage: int | None = None) -> None:
        """The monthly target limit and usage (same as ``POST /control/quota``)."""
        self.state.quota_limit = limit
        if usage is not None:
            self.state.usage = usage

    def deliveries(self, include_payload: bool = True) -> list[dict[str, Any]]:
        """The webhook request log (same as ``GET /control/deliveries``)."""
        return self.webhooks.describe(include_payload)["deliveries"]

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BODY)
        self.client_control.add_routes(app)
        self.group_control.add_routes(app)
        self.knobs.add_routes(app)
        self.pictures.add_routes(app)
        self.messaging_api.add_routes(app, self.router)
        self.chats_api.add_routes(app, self.router)
        self.webhook_api.add_routes(app, self.router)
        self.router.add_fallback(app)
        return app
