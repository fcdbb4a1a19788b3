"""The sandbox server: Meta's Graph API for the WhatsApp Cloud API at ``/{version}/...``, media
downloads at ``/media-download/...``, and the control API at ``/client/...`` and
``/control/...`` (see sandbox/whatsapp/README.md).

The bridge talks to it with the same HTTP calls it makes to ``graph.facebook.com`` — only the
base URL differs — and receives webhooks signed with the app secret, so what is tested is the
code path that runs against Meta.
"""

from __future__ import annotations

import logging
from typing import Any, Self

from aiohttp import web

from .control import ControlApi
from .faults import FaultPlan
from .graph import GraphApi
from .media import MB, MediaStore
from .messaging import Messaging
from .ratelimit import DEFAULT_MPS, PAIR_BURST, ThroughputLimiter
from .state import SandboxNumber, SandboxState
from .templates import Template, TemplateCatalog, default_templates
from .webhooks import WebhookDispatcher

log = logging.getLogger("sandbox.whatsapp")

MAX_REQUEST_BODY = 110 * MB  # a 100 MB document plus multipart overhead
DEFAULT_NUMBER = SandboxNumber(
    phone_number_id="1001", display_phone_number="+1 555 0100", verified_name="Example Advisers"
)


class WhatsAppSandbox:
    """A local stand-in for ``graph.facebook.com`` serving one WhatsApp Business Account.

    ``access_token`` is the only Bearer token the Graph API accepts; ``app_secret`` keys the
    ``X-Hub-Signature-256`` HMAC of every webhook. ``throughput_limits=True`` enforces Meta's
    per-number throughput (80 messages/second, ``throughput_mps``) and the pair rate to one
    user (one message per 6 s after a burst of ``pair_rate_burst``, error 131056).
    ``templates`` replaces the shipped message templates. ``webhook_retry_initial`` and
    ``webhook_retry_max`` bound the delivery backoff (0.2 s doubling up to 5 s).
    """

    def __init__(
        self,
        access_token: str,
        app_secret: str,
        numbers: list[SandboxNumber] | None = None,
        waba_id: str = "2001",
        graph_version: str = "v21.0",
        host: str = "127.0.0.1",
        port: int = 0,
        throughput_limits: bool = False,
        *,
        templates: list[Template] | None = None,
        throughput_mps: int = DEFAULT_MPS,
        pair_rate_burst: int = PAIR_BURST,
        webhook_retry_initial: float = 0.2,
        webhook_retry_max: float = 5.0,
    ) -> None:
        if not access_token:
            raise ValueError("access_token must not be empty")
        if not app_secret:
            raise ValueError("app_secret must not be empty")
        self.access_token = access_token
        self.app_secret = app_secret
        self.graph_version = graph_version
        self.host = host
        self.port = port
        self.state = SandboxState(list(numbers or [DEFAULT_NUMBER]), waba_id)
        self.media = MediaStore(self.state.clock)
        self.catalog = TemplateCatalog(default_templates() if templates is None else templates)
        self.limiter = ThroughputLimiter(throughput_limits, mps=throughput_mps, pair_burst=pair_rate_burst)
        self.faults = FaultPlan()
        self.webhooks = WebhookDispatcher(
            app_secret,
            self.state.changes,
            retry_initial=webhook_retry_initial,
            retry_max=webhook_retry_max,
        )
        self.messaging = Messaging(self.state, self.media, self.catalog, self.webhooks, self.limiter)
        self.graph = GraphApi(
            access_token,
            self.state,
            self.media,
            self.catalog,
            self.messaging,
            self.faults,
            lambda: self.url or "",
        )
        self.control = ControlApi(self.state, self.media, self.messaging, self.webhooks, self.faults)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ properties

    @property
    def waba_id(self) -> str:
        return self.state.waba_id

    @property
    def numbers(self) -> list[SandboxNumber]:
        return list(self.state.numbers.values())

    @property
    def graph_url(self) -> str:
        """The base URL to use instead of ``https://graph.facebook.com/<version>``."""
        return f"{self.url}/{self.graph_version}"

    @property
    def throughput_limits(self) -> bool:
        return self.limiter.enabled

    @throughput_limits.setter
    def throughput_limits(self, enabled: bool) -> None:
        self.limiter.enabled = enabled

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
        await self.webhooks.start()
        log.info("event=sandbox_started url=%s waba_id=%s", self.url, self.waba_id)

    async def stop(self) -> None:
        """Answer pending long polls, stop webhook delivery, close every connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.state.changes.close()
        await self.messaging.close()
        await self.webhooks.stop()
        await runner.cleanup()
        log.info("event=sandbox_stopped url=%s", self.url)

    async def subscribe(self, webhook_url: str, verify_token: str) -> None:
        """Meta's verification handshake against ``webhook_url``; afterwards every webhook goes
        there. Raises :class:`~sandbox.whatsapp.webhooks.WebhookSubscriptionError` (a
        ``RuntimeError``) unless it answers 200 with the challenge as the body."""
        await self.webhooks.subscribe(webhook_url, verify_token)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ test helpers

    def advance_clock(self, seconds: float) -> int:
        """Move the sandbox clock forward (same as ``POST /control/clock``)."""
        now = self.state.clock.advance(seconds)
        self.state.changes.notify()
        return now

    def deliveries(self, include_payload: bool = True) -> list[dict[str, Any]]:
        """The webhook delivery log (same as ``GET /control/deliveries``)."""
        return self.webhooks.describe(include_payload)["deliveries"]

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BODY)
        self.control.add_routes(app)
        self.graph.add_routes(app)
        return app
