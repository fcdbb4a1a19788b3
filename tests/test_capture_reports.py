"""The connectors' side of capture health (``ReportsCapture``), against the sandboxes through
the real HTTP stacks, without a homeserver: every poll round and webhook is reported, failures
carry what went wrong (never the token), a refused getUpdates does not end the polling loop,
Telegram's webhook info is probed in webhook mode, and WhatsApp reports the number a webhook was
for and each number's quality rating. Every wait is on a condition, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import telegram

from bridge.networks.telegram.config import TelegramConfig, TelegramWebhookConfig
from bridge.events import RemoteEvent
from bridge.networks.base import OnSent, ReportsCapture
from bridge.networks.telegram.connector import ALLOWED_UPDATES, TelegramConnector
from bridge.networks.telegram.webhook import register_webhook
from bridge.networks.whatsapp.config import WhatsAppConfig, WhatsAppNumber
from bridge.networks.whatsapp.connector import WhatsAppConnector
from sandbox.client import SandboxClient
from sandbox.homeserver import free_port
from sandbox.telegram import TelegramSandbox
from sandbox.whatsapp import SandboxNumber, WhatsAppSandbox
from sandbox.whatsapp.client import WhatsAppClient

BOUND = 15.0  # the polling loop's backoff (1 s, 2 s...) is inside this


@dataclass
class Reports:
    seen: list[tuple[str, str, bool, str]] = field(default_factory=list)

    def __call__(self, network: str, account: str, ok: bool, detail: str) -> None:
        self.seen.append((network, account, ok, detail))

    def failures(self) -> list[str]:
        return [d for _, _, ok, d in self.seen if not ok]

    async def until(self, predicate: Callable[[], object]) -> None:
        async def check() -> None:
            while not predicate():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(check(), BOUND)


class Sink:
    """The core's inbound pipeline; fails the first ``failures`` events."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.events: list[RemoteEvent] = []

    async def __call__(self, event: RemoteEvent, *, on_sent: OnSent | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the homeserver is away")
        self.events.append(event)


def telegram_connector(
    sandbox: TelegramSandbox, webhook: TelegramWebhookConfig | None = None
) -> TelegramConnector:
    return TelegramConnector(
        TelegramConfig(
            bot_token=sandbox.token,
            polling_timeout=1,
            base_url=f"{sandbox.url}/bot",
            base_file_url=f"{sandbox.url}/file/bot",
            webhook=webhook,
            pacing=False,
        )
    )


async def faults(sandbox: TelegramSandbox, body: dict) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sandbox.url}/sandbox/faults", json=body) as resp:
            assert resp.status == 200, await resp.text()


async def test_telegram_polling_reports_every_round_and_survives_refusals() -> None:
    async with TelegramSandbox(rate_limits=False) as sandbox:
        reports = Reports()
        connector = telegram_connector(sandbox)
        assert isinstance(connector, ReportsCapture)
        connector.set_capture_listener(reports)
        await connector.start(Sink())
        try:
            assert connector.capture_accounts() == (str(sandbox.bot_id),)
            assert (
                connector.capture_label(str(sandbox.bot_id))
                == f"Telegram bot @{sandbox.bot_username} ({sandbox.bot_id})"
            )
            await reports.until(lambda: any(ok for *_, ok, _ in reports.seen))
            # A 500 (NetworkError), then a 403 (Forbidden: not a NetworkError, it used to end the loop).
            await faults(sandbox, {"fail_next": 1, "status": 500, "methods": ["getUpdates"]})
            await reports.until(lambda: len(reports.failures()) >= 1)
            await faults(sandbox, {"fail_next": 1, "status": 403, "methods": ["getUpdates"]})
            await reports.until(lambda: len(reports.failures()) >= 2)
            seen = len(reports.seen)
            await reports.until(lambda: any(ok for *_, ok, _ in reports.seen[seen:]))  # still polling
            first, second = reports.failures()[:2]
            assert first.startswith("getUpdates failed (NetworkError") and second.startswith(
                "getUpdates was refused (Forbidden"
            )
            assert all(
                network == "telegram" and account == str(sandbox.bot_id)
                for network, account, *_ in reports.seen
            )
            assert not any(sandbox.token in d or sandbox.token.split(":")[1] in d for d in reports.failures())
            assert await connector.account_quality() == {}
        finally:
            await connector.stop()


async def test_telegram_webhook_mode_reports_deliveries_and_probes_the_webhook_info() -> None:
    async with TelegramSandbox(
        rate_limits=False, allow_local_webhooks=True, webhook_retry_initial=0.05
    ) as sandbox:
        port = free_port()
        webhook = TelegramWebhookConfig(
            public_url=f"http://127.0.0.1:{port}/telegram/webhook",
            listen_host="127.0.0.1",
            listen_port=port,
            path="/telegram/webhook",
            secret_token="Zq3_-secretTOKEN-for-the-capture-tests_01",
        )
        reports = Reports()
        sink = Sink()
        connector = telegram_connector(sandbox, webhook)
        connector.set_capture_listener(reports)
        await connector.start(sink)
        client = SandboxClient(sandbox.url, 717171, "Wes", "Hook")
        try:
            await client.say("hello over the webhook")
            await reports.until(lambda: reports.seen)
            assert reports.seen == [("telegram", str(sandbox.bot_id), True, "")] and len(sink.events) == 1
            await connector.probe_capture()  # the first: takes Telegram's record so far as history
            assert len(reports.seen) == 1

            # Someone points the bot's webhook elsewhere (another instance, a stale deployment):
            # Telegram delivers nothing here any more. The probe says so.
            async with telegram.Bot(sandbox.token, base_url=f"{sandbox.url}/bot") as other:
                await other.set_webhook(f"http://127.0.0.1:{free_port()}/elsewhere")
            await connector.probe_capture()
            assert reports.seen[-1][2] is False and "another address" in reports.seen[-1][3]
            await client.say("lost in the wrong place?")  # Telegram fails to deliver it there
            await reports.until(lambda: _webhook_error(sandbox))

            # Registered again: the update waiting at Telegram arrives; the failed delivery it
            # recorded meanwhile is reported once, then the probe is content again.
            await register_webhook(connector.bot, webhook, ALLOWED_UPDATES)
            await reports.until(lambda: len(sink.events) == 2)
            await connector.probe_capture()
            assert reports.seen[-1][2] is False and "could not deliver to the webhook" in reports.seen[-1][3]
            await connector.probe_capture()
            assert reports.seen[-1][2] is True
            assert not any(sandbox.token in d for d in reports.failures())
        finally:
            await connector.stop()


def _webhook_error(sandbox: TelegramSandbox) -> bool:
    return sandbox.api.webhook.last_error_date is not None


async def test_whatsapp_reports_the_number_a_webhook_was_for_and_its_quality() -> None:
    token, secret, verify = (
        "EAAcapture-token-0123456789abc",
        "capture-app-secret-0123456789",
        "capture-verify-0123456789",
    )
    numbers = [SandboxNumber("1001", "+1 555 0100", "Sales"), SandboxNumber("1002", "+1 555 0200", "Support")]
    async with WhatsAppSandbox(token, secret, numbers, waba_id="2001") as sandbox:
        config = WhatsAppConfig(
            graph_url=sandbox.graph_url,
            app_secret=secret,
            verify_token=verify,
            listen_host="127.0.0.1",
            listen_port=0,
            path="/whatsapp/webhook",
            public_url="",
            numbers=(
                WhatsAppNumber("1001", token, "2001", "Sales"),
                WhatsAppNumber("1002", token, "2001", ""),
            ),
        )
        reports = Reports()
        connector = WhatsAppConnector(config)
        connector.set_capture_listener(reports)
        await connector.start(Sink())
        try:
            assert connector.capture_accounts() == ("1001", "1002")
            assert connector.capture_label("1001") == "WhatsApp number Sales (+15550100, id 1001)"
            assert connector.capture_label("1002") == "WhatsApp number +15550200 (id 1002)"
            await sandbox.subscribe(f"http://127.0.0.1:{connector.webhook_port}/whatsapp/webhook", verify)
            await WhatsAppClient(sandbox.url, "4915550000001", "Wanda", "1002").say("hi")
            await reports.until(lambda: reports.seen)
            assert reports.seen == [("whatsapp", "1002", True, "")]  # only the number it was for

            assert await connector.account_quality() == {"1001": "GREEN", "1002": "GREEN"}
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{sandbox.url}/control/numbers/1001/quality", json={"quality_rating": "YELLOW"}
                ) as resp:
                    assert resp.status == 200 and (await resp.json())["quality_rating"] == "YELLOW"
                async with http.post(
                    f"{sandbox.url}/control/numbers/1001/quality", json={"quality_rating": "PURPLE"}
                ) as resp:
                    assert resp.status == 400 and "quality_rating" in (await resp.json())["error"]
                async with http.post(
                    f"{sandbox.url}/control/numbers/9999/quality", json={"quality_rating": "RED"}
                ) as resp:
                    assert resp.status == 404
            assert await connector.account_quality() == {"1001": "YELLOW", "1002": "GREEN"}
        finally:
            await connector.stop()
