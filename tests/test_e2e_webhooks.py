"""Outgoing webhooks end to end: the bridge as a child process against Synapse and the sandbox,
POSTing to a real aiohttp receiver in the test process that checks every signature with the
README's recipe and records what it got.

The bridge's ``event=webhook_queued`` log lines are the ground truth of what was emitted, so
"nothing lost" is checked id by id, and "in order" against the order the bridge queued them.
Retries are made due by moving the bridge's clock (HOUSELINE_CLOCK_FILE), never by waiting
out a backoff."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import pytest
from aiohttp import web

from bridge.devstack import DevStack
from bridge.webhooks import MAX_BACKOFF_S, backoff
from sandbox.employee import Employee
from tests.conftest import BridgeFactory, BridgeProcess
from tests.support import BOT, bot_notice_about, bot_notice_in, eventually, ghost_of

COMPLIANCE = "@compliance:localhost"
SECRETS = {
    "crm": "crm-secret-0123456789abcdefghijkl",
    "denials": "denials-secret-0123456789abcdefgh",
    "broken": "broken-secret-0123456789abcdefghi",
}
_QUEUED = re.compile(r"event=webhook_queued event_id=(\S+) type=(\S+) room=(\S+) receivers=(\S+)")
_RETRY_IN = re.compile(r"event=webhook_retry receiver=(\S+) .* retry_in=([0-9.]+)s")


def verify(secret: str, headers: Any, raw: bytes, tolerance_s: int = 300) -> bool:
    """The README's verification recipe, as a receiver would write it."""
    timestamp = headers.get("X-Houseline-Timestamp", "")
    signature = headers.get("X-Houseline-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance_s:
        return False  # missing, or too old: a replay
    expected = (
        "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected, signature)


@dataclass
class Got:
    receiver: str
    id: str
    type: str
    room_id: str
    raw: bytes
    headers: dict[str, str]
    valid: bool
    #: What the receiver answered ("hang": held until the bridge was gone).
    answer: int | str

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)


class Receiver:
    """A CRM's webhook endpoint: /{name} per configured receiver; ``answers[name]`` is the HTTP
    status it answers (or "hang"); :meth:`down` closes the listener and every connection."""

    def __init__(self) -> None:
        self.got: list[Got] = []
        self.answers: dict[str, int | str] = {}
        self.release = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def config(self, *names: str, events: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return [
            {"name": n, "url": self.url(n), "secret": SECRETS[n], "events": (events or {}).get(n, ["*"])}
            for n in names
        ]

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.read()
        body = json.loads(raw)
        answer = self.answers.get(name, 200)
        got = Got(
            name,
            body["id"],
            body["type"],
            body["room_id"],
            raw,
            dict(request.headers),
            verify(SECRETS[name], request.headers, raw),
            answer,
        )
        self.got.append(got)
        if answer == "hang":
            await self.release.wait()
            return web.Response(status=200)
        return web.Response(status=int(answer))

    def of(self, name: str) -> list[Got]:
        return [g for g in self.got if g.receiver == name]

    def accepted(self, name: str) -> list[Got]:
        """What the receiver answered 2xx, first copy of each id, in arrival order."""
        seen: set[str] = set()
        out = []
        for g in self.of(name):
            if isinstance(g.answer, int) and 200 <= g.answer < 300 and g.id not in seen:
                seen.add(g.id)
                out.append(g)
        return out


class HookBridge(BridgeProcess):
    def queued(self, receiver: str) -> list[tuple[str, str, str]]:
        """(id, type, room) of every event queued for ``receiver``, in queue order."""
        out = []
        for line in self.lines:
            m = _QUEUED.search(line)
            if m and receiver in m.group(4).split(","):
                out.append((m.group(1), m.group(2), m.group(3)))
        return out

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    def pending(self) -> dict[str, int]:
        with sqlite3.connect(self.db_path) as db:
            return dict(
                db.execute("SELECT receiver, COUNT(*) FROM hook_delivery GROUP BY receiver").fetchall()
            )

    def status_room(self) -> str | None:
        with sqlite3.connect(self.db_path) as db:
            row = db.execute("SELECT room_id FROM bridge_room WHERE name='status'").fetchone()
        return row[0] if row else None


@pytest.fixture
async def receiver():
    r = Receiver()
    await r.up()
    yield r
    r.release.set()
    await r.down()


def hooks(webhooks: list[dict[str, Any]]) -> Callable[[dict], None]:
    """The bridge config's ``webhooks``."""

    def change(config: dict) -> None:
        config["webhooks"] = webhooks

    return change


def by_room(items: list[tuple[str, str, str]] | list[Got]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        event_id, room = (item.id, item.room_id or "-") if isinstance(item, Got) else (item[0], item[2])
        out.setdefault(room, []).append(event_id)
    return out


async def all_accepted(
    receiver: Receiver, name: str, procs: list[HookBridge], timeout: float = 60
) -> list[Got]:
    """Waits until the receiver accepted every event the bridge(s) queued for it."""

    async def done() -> list[Got] | None:
        want = {q[0] for p in procs for q in p.queued(name)}
        got = receiver.accepted(name)
        return got if want and want <= {g.id for g in got} else None

    return await eventually(done, f"every event queued for {name} accepted", timeout)


def assert_in_queue_order(receiver: Receiver, name: str, procs: list[HookBridge]) -> None:
    queued = [q for p in procs for q in p.queued(name)]
    assert by_room(receiver.accepted(name)) == by_room(queued)


# --------------------------------------------------------------------------------------------


def test_backoff_starts_at_a_second_doubles_and_stops_at_ten_minutes() -> None:
    for attempts, base in ((0, 1), (1, 2), (5, 32), (9, 512), (10, 600), (40, 600)):
        delays = [backoff(attempts) for _ in range(200)]
        assert 0.75 * base <= min(delays) and max(delays) <= base, (attempts, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered: deliveries that failed together spread out
    assert backoff(0, retry_after=30) == 30 and backoff(0, retry_after=10_000) == MAX_BACKOFF_S == 600


async def test_events_arrive_signed_typed_and_in_order(
    stack: DevStack, own_bridge: BridgeFactory, receiver: Receiver, employee: Employee, new_client
) -> None:
    proc = await own_bridge(
        config=hooks(receiver.config("crm", "denials", events={"denials": ["message.denied"]})),
        clock=True,
        cls=HookBridge,
    )
    client = new_client("Hook", "Client")
    await client.say("Hello, webhooks")
    room = (await employee.wait_for_message("Hello, webhooks", sender=ghost_of(client))).room_id
    answer = await employee.send_text(room, "Answer from the desk")
    await client.wait_for_text("Answer from the desk")
    denied = await employee.send_text(room, "Pay with 4111 1111 1111 1111")
    await employee.wait_for_event(bot_notice_about(room, denied), 30, "the refusal")

    async def crm_has_all() -> list[Got] | None:
        types = [g.type for g in receiver.accepted("crm") if g.room_id == room]
        return receiver.accepted("crm") if "message.denied" in types else None

    await eventually(crm_has_all, "the denial at the crm receiver")
    got = await all_accepted(receiver, "crm", [proc])
    in_room = [g for g in got if g.room_id == room]
    assert [g.type for g in in_room][:4] == [
        "conversation.created",
        "message.inbound",
        "message.outbound",
        "message.denied",
    ]
    assert_in_queue_order(receiver, "crm", [proc])

    for g in receiver.got:
        assert g.valid, f"bad signature on {g.id}"
        assert g.headers["Content-Type"] == "application/json"
        assert g.headers["X-Houseline-Event"] == g.type and g.headers["X-Houseline-Delivery"] == g.id
        assert set(g.body) == {"id", "type", "room_id", "at", "data"}
        datetime.fromisoformat(g.body["at"].replace("Z", "+00:00"))
        assert b"4111 1111 1111 1111" not in g.raw  # the refused card number never leaves, here either
    inbound, outbound, refusal = in_room[1].body["data"], in_room[2].body["data"], in_room[3].body["data"]
    assert (
        inbound["text"] == "Hello, webhooks"
        and inbound["network"] == "telegram"
        and inbound["sender"] == ghost_of(client)
    )
    assert outbound["event_id"] == answer and outbound["remote_ids"]
    assert (
        refusal["event_id"] == denied
        and refusal["rule"] == "sharing.card_numbers"
        and refusal["verdict"] == "deny"
    )

    # A receiver gets only what it subscribed to, and each event once here (nothing failed).
    await eventually(lambda: _ready(receiver.accepted("denials")), "the denial at the denials receiver")
    assert [(g.type, g.id) for g in receiver.of("denials")] == [("message.denied", in_room[3].id)]
    assert len({g.id for g in receiver.of("crm")}) == len(receiver.of("crm"))
    # A wrong secret fails the recipe.
    assert not verify("another-secret-0123456789abcdef", in_room[0].headers, in_room[0].raw)
    await eventually(lambda: _ready(proc.pending() == {}), "the queue to drain")


async def test_a_crash_mid_delivery_loses_nothing_and_repeats_the_same_id(
    stack: DevStack, own_bridge: BridgeFactory, receiver: Receiver, employee: Employee, new_client
) -> None:
    receiver.answers["crm"] = 500
    first = await own_bridge(config=hooks(receiver.config("crm")), clock=True, cls=HookBridge)
    client = new_client("Crash", "Course")
    for text in ("first", "second", "third"):
        await client.say(text)
        await employee.wait_for_message(text, sender=ghost_of(client))
    await first.wait_for_log("event=webhook_retry receiver=crm", 30)

    # The receiver stops answering: the next attempt is in flight when the bridge is killed.
    hung_before = len(receiver.of("crm"))
    receiver.answers["crm"] = "hang"
    first.advance(600)  # the retry is due now, whatever its backoff
    hung = await eventually(
        lambda: _ready([g for g in receiver.of("crm")[hung_before:] if g.answer == "hang"]),
        "a delivery in flight",
    )
    await first.kill()
    queued = first.queued("crm")
    assert len(queued) >= 4 and not receiver.accepted("crm")

    receiver.answers["crm"] = 200
    receiver.release.set()
    second = await own_bridge()
    await client.say("after the restart")
    await employee.wait_for_message("after the restart", sender=ghost_of(client))
    got = await all_accepted(receiver, "crm", [first, second])
    assert_in_queue_order(receiver, "crm", [first, second])
    assert all(g.valid for g in receiver.got)

    # Duplicates carry the same id, and the same bytes.
    copies: dict[str, set[bytes]] = {}
    for g in receiver.of("crm"):
        copies.setdefault(g.id, set()).add(g.raw)
    assert all(len(bodies) == 1 for bodies in copies.values())
    duplicated = [i for i in copies if sum(g.id == i for g in receiver.of("crm")) > 1]
    assert hung[0].id in duplicated
    assert {q[0] for q in queued} <= {g.id for g in got}
    await eventually(lambda: _ready(second.pending() == {}), "the queue to drain")
    print(
        f"webhooks crash: queued_before_kill={len(queued)} delivered={len(got)} lost=0 "
        f"requests={len(receiver.of('crm'))} ids_seen_more_than_once={len(duplicated)}"
    )


async def test_a_receiver_refusing_forever_is_reported_once_and_blocks_nobody(
    stack: DevStack, own_bridge: BridgeFactory, receiver: Receiver, employee: Employee, staff, new_client
) -> None:
    receiver.answers["broken"] = 404
    proc = await own_bridge(config=hooks(receiver.config("crm", "broken")), clock=True, cls=HookBridge)
    client = new_client("Refused", "Receiver")
    await client.say("one")
    room = (await employee.wait_for_message("one", sender=ghost_of(client))).room_id

    async def one_more_attempt() -> None:
        before = len(receiver.of("broken"))
        proc.advance(600)
        await eventually(
            lambda: _ready(len(receiver.of("broken")) > before), "another attempt at the broken receiver", 15
        )

    while len(receiver.of("broken")) < 5:
        await one_more_attempt()
    await proc.wait_for_log("event=webhook_receiver_failing receiver=broken", 15)
    status = await eventually(lambda: _ready(proc.status_room()), "the status room")
    observer = staff["compliance"]
    await observer.wait_for(
        lambda: status in observer.invites, 30, "the observer's invite to the status room"
    )
    await observer.join(status)
    notice = await observer.wait_for_event(
        bot_notice_in(status, "broken is failing"), 30, "the failing notice"
    )
    assert COMPLIANCE in notice.content["m.mentions"]["user_ids"] and "404" in notice.content["body"]

    # It goes on failing (past 10 in a row: still one report); the other receiver gets everything.
    for text in ("two", "three"):
        await client.say(text)
        await employee.wait_for_message(text, sender=ghost_of(client))
    while len(receiver.of("broken")) < 12:
        await one_more_attempt()
    crm = await all_accepted(receiver, "crm", [proc])
    assert [g.body["data"]["text"] for g in crm if g.room_id == room and g.type == "message.inbound"] == [
        "one",
        "two",
        "three",
    ]
    assert not receiver.accepted("broken") and proc.pending().get("broken", 0) >= 4

    # It comes back: told once more (recovered), then everything arrives, in order.
    receiver.answers["broken"] = 200
    proc.advance(600)
    await observer.wait_for_event(
        bot_notice_in(status, "broken is accepting deliveries again"), 60, "the recovery notice"
    )
    notices = [
        e
        for e in observer.events
        if e.room_id == status and e.sender == BOT and "is failing" in e.content.get("body", "")
    ]
    assert len(notices) == 1 and proc.count("event=webhook_receiver_failing") == 1
    await all_accepted(receiver, "broken", [proc])
    assert_in_queue_order(receiver, "broken", [proc])
    assert not [e for e in observer.events if e.room_id == status and "crm" in e.content.get("body", "")]
    print(
        f"webhooks 404: attempts_at_broken={len(receiver.of('broken'))} failing_notices=1 crm_delivered={len(crm)}"
    )


async def test_an_hour_long_outage_loses_nothing(
    stack: DevStack, own_bridge: BridgeFactory, receiver: Receiver, employee: Employee, new_client
) -> None:
    proc = await own_bridge(config=hooks(receiver.config("crm")), clock=True, cls=HookBridge)
    alice = new_client("Alice", "Outage")
    await alice.say("before the outage")
    room = (await employee.wait_for_message("before the outage", sender=ghost_of(alice))).room_id
    await all_accepted(receiver, "crm", [proc])

    await receiver.down()
    queued_before = len(proc.queued("crm"))
    retries_before = proc.count("event=webhook_retry receiver=crm")
    for i in range(5):
        await alice.say(f"while down {i}")
        await employee.wait_for_message(f"while down {i}", sender=ghost_of(alice))
    await employee.send_text(room, "We are on it")
    await alice.wait_for_text("We are on it")
    bob = new_client("Bob", "Outage")  # a new conversation, unanswered: the hour brings its SLA steps
    await bob.say("new while down")
    await employee.wait_for_message("new while down", sender=ghost_of(bob))
    await eventually(
        lambda: _ready(proc.count("event=webhook_retry receiver=crm") > retries_before), "a failed attempt"
    )

    # One hour passes on the bridge's clock, in 10-minute steps (the backoff's cap): the bridge
    # keeps trying and failing throughout.
    for _ in range(6):
        before = proc.count("event=webhook_retry receiver=crm")
        proc.advance(600)
        await eventually(
            lambda b=before: _ready(proc.count("event=webhook_retry receiver=crm") > b),
            "an attempt during the outage",
            15,
        )
    during = proc.queued("crm")[queued_before:]
    assert not {q[0] for q in during} & {g.id for g in receiver.accepted("crm")}
    delays = [float(m.group(2)) for line in proc.lines if (m := _RETRY_IN.search(line))]
    assert max(delays) <= 600.0

    await receiver.up()
    proc.advance(600)
    got = await all_accepted(receiver, "crm", [proc])
    assert_in_queue_order(receiver, "crm", [proc])
    assert {q[0] for q in during} <= {g.id for g in got}
    await eventually(lambda: _ready(proc.pending() == {}), "the queue to drain")
    types: dict[str, int] = {}
    for q in during:
        types[q[1]] = types.get(q[1], 0) + 1
    assert (
        types.get("message.inbound", 0) >= 6
        and types.get("message.outbound", 0) >= 1
        and types.get("conversation.created", 0) >= 1
    )
    print(
        f"webhooks outage: simulated_s=3600 queued_while_down={len(during)} delivered_after={len(during)} lost=0 "
        f"failed_attempts={proc.count('event=webhook_retry receiver=crm')} max_retry_in_s={max(delays):.0f} types={types}"
    )


async def _ready(value: Any) -> Any:
    return value
