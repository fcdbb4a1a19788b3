"""Metrics and capture health, end to end: the bridge as a child process with ``metrics:`` on,
against real Synapse and the sandboxes. A scrape of ``GET /metrics`` (parsed with
prometheus_client's own parser) counts what a client, an answer and a denial did; the token is
required when set; and when capture stops (Telegram's getUpdates failing, a Telegram Business
account disconnected, WhatsApp numbers silent past ``capture_stale_minutes`` on the moved
clock, a number's quality dropping) the compliance observer reads it in the "Houseline
status" room, the gauges say so, and the recovery is announced once, across a restart too."""

from __future__ import annotations

import itertools
import os
import secrets
import sqlite3
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.devstack import WHATSAPP_NUMBER, WHATSAPP_SECOND_NUMBER, DevStack
from sandbox.employee import Employee
from sandbox.homeserver import free_port
from sandbox.whatsapp.client import WhatsAppClient
from tests.conftest import BridgeFactory, BridgeProcess
from tests.support import BOT, bot_notice_about, control, eventually

COMPLIANCE = "@compliance:localhost"
_owner_ids = itertools.count(8_700_000_001 + (os.getpid() % 1000) * 1000)
_wa_ids = itertools.count(4_917_000_000_001 + (os.getpid() % 1000) * 1000)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class MetricsBridge(BridgeProcess):
    metrics_url: str
    token: str | None

    async def start(self, timeout: float = 60) -> None:
        await super().start(timeout)
        await self.wait_for_log("event=capture_health_started")

    async def scrape(self, token: str | None = "default") -> tuple[int, str, str]:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(self.metrics_url, headers=headers) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), await resp.text()

    async def samples(self) -> Samples:
        status, content_type, text = await self.scrape()
        assert status == 200 and content_type.startswith("text/plain"), (status, content_type, text[:500])
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def status_room(self) -> str | None:
        with sqlite3.connect(self.db_path) as db:
            row = db.execute("SELECT room_id FROM bridge_room WHERE name='status'").fetchone()
        return row[0] if row else None


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def make_bridge(own_bridge: BridgeFactory):
    """A bridge with its own store and clock file and ``metrics:`` as given; several calls
    restart the same bridge (same store, clock and metrics port)."""
    port = free_port()

    async def start(**metrics: Any) -> MetricsBridge:
        def with_metrics(config: dict) -> None:
            config["metrics"] = {"enabled": True, "listen_host": "127.0.0.1", "listen_port": port, **metrics}

        proc = await own_bridge(config=with_metrics, clock=True, cls=MetricsBridge)
        proc.token, proc.metrics_url = metrics.get("token"), f"http://127.0.0.1:{port}/metrics"
        return proc

    return start


async def status_notices(person: Employee, room: str) -> list[dict[str, Any]]:
    """The bot's notices in the status room, oldest first, as ``person`` reads them (the room's
    history, not only what their sync happened to bring)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{person.homeserver_url}/_matrix/client/v3/rooms/{room}/messages",
            params={"dir": "b", "limit": "200"},
            headers={"Authorization": f"Bearer {person.access_token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            chunk = (await resp.json())["chunk"]
    return [e["content"] for e in reversed(chunk) if e["type"] == "m.room.message" and e["sender"] == BOT]


async def observer_joins_status_room(proc: MetricsBridge, observer: Employee) -> str:
    async def created() -> str | None:
        return proc.status_room()

    room = await eventually(created, "the status room to be created", 60)
    await observer.wait_for(lambda: room in observer.invites, 30, "the observer's invite to the status room")
    await observer.join(room)
    return room


async def notice(person: Employee, room: str, *needles: str, timeout: float = 60) -> dict[str, Any]:
    def matches(content: dict[str, Any]) -> bool:
        return all(n in content.get("body", "") for n in needles)

    async def found() -> dict[str, Any] | None:
        return next((c for c in await status_notices(person, room) if matches(c)), None)

    content = await eventually(found, f"a status notice with {needles}", timeout)
    assert COMPLIANCE in content["m.mentions"]["user_ids"] and COMPLIANCE in content["body"], content
    return content


async def gauge(proc: MetricsBridge, name: str, expected: float, **labels: str) -> Samples:
    async def check() -> Samples | None:
        samples = await proc.samples()
        return samples if value(samples, name, **labels) == expected else None

    return await eventually(check, f"{name}{labels} == {expected}", 60)


def bridged(samples: Samples, direction: str) -> float:
    return (
        value(
            samples,
            "houseline_messages_bridged_total",
            network="telegram",
            direction=direction,
            kind="message",
        )
        or 0
    )


# --------------------------------------------------------------------------------------------


async def test_metrics_count_a_conversation_and_need_the_token(
    stack: DevStack, make_bridge, employee: Employee, new_client
) -> None:
    token = secrets.token_urlsafe(32)
    proc = await make_bridge(token=token)

    # The token: none, a wrong one, the right one.
    status, content_type, body = await proc.scrape(None)
    assert status == 401 and content_type.startswith("application/json") and "error" in body
    status, _, _ = await proc.scrape("x" + token[1:])
    assert status == 401
    before = await proc.samples()
    assert value(before, "houseline_outbox_depth") == 0
    # Present from the start (rate() sees zeros, not gaps).
    assert (
        value(before, "houseline_messages_bridged_total", network="telegram", direction="out", kind="message")
        == 0
    )

    # A client writes, an employee answers, then tries to send a card number.
    client = new_client("Met", "Rics")
    await client.say("How are my funds doing?")
    room = (await employee.wait_for_message("How are my funds doing?")).room_id
    await employee.send_text(room, "Very well, thank you")
    await client.wait_for_text("Very well, thank you")
    denied = await employee.send_text(room, "Please pay with 4111 1111 1111 1111")
    assert (
        "rule sharing.card_numbers"
        in (await employee.wait_for_event(bot_notice_about(room, denied), 30, "the refusal")).content["body"]
    )

    async def counted() -> Samples | None:
        s = await proc.samples()
        return (
            s
            if value(s, "houseline_messages_denied_total", rule="sharing.card_numbers", verdict="deny") == 1
            else None
        )

    after = await eventually(counted, "the denial to be counted")
    assert bridged(after, "in") - bridged(before, "in") == 1
    assert bridged(after, "out") - bridged(before, "out") == 1  # the answer; the denied one never left
    assert value(after, "houseline_conversations_created_total", network="telegram") >= 1
    assert value(after, "houseline_delivery_latency_seconds_count", network="telegram") == 1
    latency = value(after, "houseline_delivery_latency_seconds_sum", network="telegram")
    assert latency is not None and 0 < latency < 30
    assert value(after, "houseline_delivery_latency_seconds_bucket", network="telegram", le="+Inf") == 1
    assert value(after, "houseline_delivery_retries_total", network="telegram") == 0
    assert value(after, "houseline_outbox_depth") == 0 and value(after, "houseline_held_messages") == 0
    assert value(after, "houseline_waiting_conversations") == 0  # the answer stopped the clock
    assert value(after, "houseline_timers_due", kind="reminder_step") == 0
    bot_account = stack.telegram.token.split(":", 1)[0]
    assert value(after, "houseline_capture_up", network="telegram", account=bot_account) == 1
    assert value(after, "houseline_connector_up", network="telegram", account=bot_account) == 1
    assert value(after, "houseline_capture_up", network="whatsapp", account=WHATSAPP_NUMBER) == 1
    last = value(
        after, "houseline_capture_last_success_timestamp_seconds", network="telegram", account=bot_account
    )
    assert last is not None and abs(last - time.time()) < 60
    assert proc.status_room() is None  # nothing went wrong: no status room was made
    assert token not in proc.output


async def test_telegram_capture_stops_and_recovers_in_the_status_room(
    stack: DevStack, make_bridge, staff, new_client
) -> None:
    proc = await make_bridge()  # loopback without a token
    observer = staff["compliance"]
    bot_account = stack.telegram.token.split(":", 1)[0]

    # Telegram answers every getUpdates with 500: after three failures in a row, capture stopped.
    await control(
        stack, "POST", "/sandbox/faults", {"fail_next": 1000, "status": 500, "methods": ["getUpdates"]}
    )
    try:
        down = await gauge(proc, "houseline_capture_up", 0, network="telegram", account=bot_account)
        assert value(down, "houseline_connector_up", network="telegram", account=bot_account) == 0
        assert (
            value(
                down, "houseline_capture_problem", network="telegram", account=bot_account, problem="failing"
            )
            == 1
        )
        room = await observer_joins_status_room(proc, observer)
        stopped = await notice(
            observer, room, "Capture stopped: Telegram bot @", f"({bot_account})", "Internal Server Error"
        )
        assert "not reaching the record" in stopped["body"]
    finally:
        await control(stack, "POST", "/sandbox/faults", {"fail_next": 0})
    recovered = await notice(
        observer, room, "Capture recovered: Telegram bot @", f"({bot_account}) is receiving again"
    )
    assert "it had stopped from" in recovered["body"] and "Telegram still holds them" in recovered["body"]
    await gauge(proc, "houseline_capture_up", 1, network="telegram", account=bot_account)
    client = new_client("After", "Outage")  # and messages flow again
    await client.say("back?")
    await proc.wait_for_log(f"chat={client.user_id} ")

    # A Telegram Business owner disconnects the bot: that account's capture stopped; reconnected: recovered.
    owner_id = next(_owner_ids)
    conn = await control(
        stack,
        "POST",
        "/business/connect",
        {"owner_id": owner_id, "owner_first_name": "Mia", "owner_last_name": "Metric"},
    )
    account = f"business:{conn['id']}"
    await proc.wait_for_log(f"event=account_updated network=telegram account={account} enabled=True")
    await control(stack, "POST", f"/business/{conn['id']}/disconnect", {})
    await notice(
        observer,
        room,
        "Capture stopped: the Telegram Business account of Mia Metric",
        account,
        "disconnected it",
    )
    await gauge(proc, "houseline_capture_up", 0, network="telegram", account=account)
    await control(stack, "POST", "/business/connect", {"owner_id": owner_id})
    await notice(
        observer, room, "Capture recovered: the Telegram Business account of Mia Metric", "is connected again"
    )
    samples = await gauge(proc, "houseline_capture_up", 1, network="telegram", account=account)
    assert value(samples, "houseline_capture_up", network="telegram", account=bot_account) == 1

    # Each transition was said once.
    bodies = [c["body"] for c in await status_notices(observer, room)]
    print("status room:", *bodies, sep="\n  ")
    assert (
        sum(b.startswith("Capture stopped: Telegram bot @") and f"({bot_account})" in b for b in bodies) == 1
    )
    assert (
        sum(b.startswith("Capture recovered: Telegram bot @") and f"({bot_account})" in b for b in bodies)
        == 1
    )
    assert sum("Capture stopped: the Telegram Business account of Mia Metric" in b for b in bodies) == 1


async def test_silent_whatsapp_numbers_and_a_quality_drop_are_announced_across_a_restart(
    stack: DevStack, make_bridge, staff
) -> None:
    assert stack.whatsapp is not None
    proc = await make_bridge(capture_stale_minutes=10)
    observer = staff["compliance"]

    async def wa(method: str, path: str, body: dict | None = None) -> dict:
        async with aiohttp.ClientSession() as http:
            async with http.request(method, f"{stack.whatsapp.url}{path}", json=body) as resp:
                data = await resp.json()
                assert resp.status == 200, (path, resp.status, data)
                return data

    assert (
        await wa("POST", f"/control/numbers/{WHATSAPP_SECOND_NUMBER}/quality", {"quality_rating": "RED"})
    )["quality_rating"] == "RED"
    try:
        # Eleven minutes later (the bridge's clock) no webhook came for either number, and the
        # probe finds the second number rated RED. Telegram polled meanwhile: it stays up.
        proc.advance(11 * 60)
        room = await observer_joins_status_room(proc, observer)
        for number in (WHATSAPP_NUMBER, WHATSAPP_SECOND_NUMBER):
            await notice(
                observer, room, "Capture stopped: WhatsApp number", f"id {number})", "nothing received for 1"
            )
        await notice(
            observer,
            room,
            "Capture at risk: WhatsApp number +15550102",
            f"id {WHATSAPP_SECOND_NUMBER})",
            "quality RED",
        )
        samples = await gauge(proc, "houseline_capture_up", 0, network="whatsapp", account=WHATSAPP_NUMBER)
        assert (
            value(
                samples,
                "houseline_capture_problem",
                network="whatsapp",
                account=WHATSAPP_NUMBER,
                problem="stale",
            )
            == 1
        )
        assert (
            value(
                samples,
                "houseline_account_quality",
                network="whatsapp",
                account=WHATSAPP_SECOND_NUMBER,
                rating="RED",
            )
            == 1
        )
        assert (
            value(
                samples,
                "houseline_capture_problem",
                network="whatsapp",
                account=WHATSAPP_SECOND_NUMBER,
                problem="quality",
            )
            == 1
        )
        assert (
            value(
                samples,
                "houseline_capture_up",
                network="telegram",
                account=stack.telegram.token.split(":", 1)[0],
            )
            == 1
        )

        # A client writes to the first number: its webhook arrives, capture recovered.
        await WhatsAppClient(stack.whatsapp.url, str(next(_wa_ids)), "Wanda Webhook", WHATSAPP_NUMBER).say(
            "hello there"
        )
        recovered = await notice(
            observer, room, "Capture recovered: WhatsApp number", f"id {WHATSAPP_NUMBER}) is receiving again"
        )
        assert (
            "11 min" in recovered["body"] and "WhatsApp still holds them" in recovered["body"]
        )  # since the bridge started
        samples = await gauge(proc, "houseline_capture_up", 1, network="whatsapp", account=WHATSAPP_NUMBER)
        assert value(
            samples,
            "houseline_capture_last_success_timestamp_seconds",
            network="whatsapp",
            account=WHATSAPP_NUMBER,
        )

        # A restart while the second number is still silent and RED: nothing is announced twice,
        # and the ends are announced after it.
        assert await proc.stop() == 0
        proc = await make_bridge(capture_stale_minutes=10)
        await proc.wait_for_log(
            f"event=capture_problem_carried network=whatsapp account={WHATSAPP_SECOND_NUMBER} problem=quality"
        )
        await gauge(proc, "houseline_capture_up", 0, network="whatsapp", account=WHATSAPP_SECOND_NUMBER)
    finally:
        await wa("POST", f"/control/numbers/{WHATSAPP_SECOND_NUMBER}/quality", {"quality_rating": "GREEN"})
    proc.advance(6 * 60)  # the next probe (every 5 minutes)
    await notice(
        observer,
        room,
        "Capture recovered: WhatsApp number",
        f"id {WHATSAPP_SECOND_NUMBER}):",
        "quality GREEN again",
    )
    await WhatsAppClient(stack.whatsapp.url, str(next(_wa_ids)), "Walt Webhook", WHATSAPP_SECOND_NUMBER).say(
        "anyone?"
    )
    await notice(
        observer,
        room,
        "Capture recovered: WhatsApp number",
        f"id {WHATSAPP_SECOND_NUMBER}) is receiving again",
    )
    await gauge(proc, "houseline_capture_up", 1, network="whatsapp", account=WHATSAPP_SECOND_NUMBER)
    bodies = [c["body"] for c in await status_notices(observer, room)]
    print("status room:", *bodies, sep="\n  ")
    for lead, number in (
        ("Capture stopped", WHATSAPP_SECOND_NUMBER),
        ("Capture at risk", WHATSAPP_SECOND_NUMBER),
        ("Capture stopped", WHATSAPP_NUMBER),
        ("Capture recovered", WHATSAPP_NUMBER),
    ):
        assert sum(b.startswith(f"{lead}: WhatsApp number") and f"id {number})" in b for b in bodies) == 1, (
            lead,
            number,
            bodies,
        )
