"""The fault suite: a two-way conversation across many chats (Telegram and LINE) while the bridge
is SIGKILLed and restarted, Synapse is restarted, Telegram and LINE answer 429 and 500 bursts (LINE
also a push that succeeded but whose answer was lost), and updates, webhooks and transactions are
redelivered. Afterwards every message arrived exactly once, in per-chat order.

`make test` runs it at a modest size; `make faults` runs it alone at full size
(FAULT_MESSAGES=1000 FAULT_CHATS=20) and prints one summary line.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import pytest

from bridge.devstack import DevStack
from sandbox.client import SandboxClient
from sandbox.employee import Employee
from tests.conftest import BridgeProcess
from tests.support import control, ghost

MESSAGES = int(os.environ.get("FAULT_MESSAGES", "160"))
CHATS = int(os.environ.get("FAULT_CHATS", "8"))
#: Of the chats, this many are LINE chats (the rest Telegram).
LINE_CHATS = max(1, CHATS // 4)
SETTLE_S = float(os.environ.get("FAULT_SETTLE_S", "240"))

pytestmark = pytest.mark.faults


class LineChat:
    """A LINE client through the LINE sandbox's control API, with the Telegram client's shape
    (``say``, ``inbox``) so the traffic treats every chat alike."""

    def __init__(self, stack: DevStack, alias: str) -> None:
        assert stack.line is not None and stack.line.url
        self.base, self.alias, self.user_id = stack.line.url, alias, ""

    async def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
            async with http.request(method, f"{self.base}{path}", json=body) as resp:
                data = await resp.json()
                assert resp.status == 200, (path, resp.status, data)
                return data

    async def say(self, text: str) -> None:
        sent = await self._call(
            "POST", f"/client/{self.alias}/messages", {"displayName": self.alias, "text": text}
        )
        self.user_id = sent["userId"]

    async def inbox(self) -> list[dict]:
        got = await self._call("GET", f"/client/{self.alias}/messages")
        return [{"text": (v.get("message") or {}).get("text", "")} for v in got["messages"]]


async def line_control(stack: DevStack, path: str, body: dict) -> dict:
    assert stack.line is not None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.post(f"{stack.line.url}{path}", json=body) as resp:
            assert resp.status == 200, (path, resp.status, await resp.text())
            return await resp.json()


@dataclass
class Ledger:
    """What was sent, per chat and direction, in order."""

    inbound: dict[int, list[str]] = field(default_factory=dict)
    outbound: dict[int, list[str]] = field(default_factory=dict)


async def employee_send(employee: Employee, room: str, text: str) -> None:
    """The employee's client retries with the same transaction id, so a retry never duplicates."""
    txn = f"fault-{uuid.uuid5(uuid.NAMESPACE_OID, text).hex}"
    deadline = time.monotonic() + 120
    while True:
        try:
            await employee.send_text(room, text, txn_id=txn)
            return
        except (AssertionError, OSError, aiohttp.ClientError, asyncio.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def traffic(
    ledger: Ledger, clients: list[SandboxClient], rooms: list[str], employee: Employee, start: int, count: int
) -> None:
    """Alternating directions; each chat's messages are sent one after another (its order)."""

    async def one_chat(c: int) -> None:
        for i in range(start + c, start + count, len(clients)):
            if i % 2 == 0:
                text = f"client {c} says {i}"
                ledger.inbound.setdefault(c, []).append(text)
                await clients[c].say(text)
            else:
                text = f"employee answers {c} with {i}"
                ledger.outbound.setdefault(c, []).append(text)
                await employee_send(employee, rooms[c], text)
            await asyncio.sleep(random.uniform(0, 0.05))

    await asyncio.gather(*(one_chat(c) for c in range(len(clients))))


def tally(expected: list[str], seen: list[str]) -> tuple[int, int, int]:
    """(lost, duplicated, reordered) for one chat and direction."""
    lost = sum(1 for text in expected if text not in seen)
    duplicated = sum(seen.count(text) - 1 for text in set(seen) if seen.count(text) > 1)
    first_seen = [text for i, text in enumerate(seen) if text in expected and text not in seen[:i]]
    position = {text: i for i, text in enumerate(expected)}
    # A message counts as reordered when it arrived after one that was sent later.
    latest = -1
    reordered = 0
    for text in first_seen:
        if position[text] < latest:
            reordered += 1
        latest = max(latest, position[text])
    return lost, duplicated, reordered


async def test_fault_suite(stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client) -> None:
    rng = random.Random(int(os.environ.get("FAULT_SEED", "7")))
    random.seed(rng.random())
    clients: list = [new_client(f"Fault{c}", "Client") for c in range(CHATS - LINE_CHATS)]
    clients += [LineChat(stack, f"fault{uuid.uuid4().hex[:8]}x{c}") for c in range(LINE_CHATS)]
    namer = stack.config.ghost_namer()

    def ghost_of(client) -> str:
        return (
            namer.user_id("line", client.user_id) if isinstance(client, LineChat) else ghost(client.user_id)
        )

    rooms = []
    for client in clients:
        await client.say("opening the conversation")
    for client in clients:
        rooms.append(
            (
                await employee.wait_for_message(
                    "opening the conversation", sender=ghost_of(client), timeout=60
                )
            ).room_id
        )
    ledger = Ledger()
    quarter = MESSAGES // 4
    scenarios = 0

    # (a) SIGKILL the bridge at random moments, several times, and restart it.
    async def kills() -> None:
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            await bridge.kill()
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            await bridge.start()

    await asyncio.gather(traffic(ledger, clients, rooms, employee, 0, quarter), kills())
    scenarios += 1

    # (b) stop and restart Synapse mid-flow.
    async def homeserver_restart() -> None:
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        await stack.homeserver.restart()

    await asyncio.gather(traffic(ledger, clients, rooms, employee, quarter, quarter), homeserver_restart())
    # The bridge noticed the outage and read the portals for events the homeserver forgot.
    await bridge.wait_for_log("event=catchup_done why=homeserver_back", 60)
    scenarios += 1

    # (c) Telegram answers bursts of 429 and 500, on every method (polling included); LINE's
    # push answers 500s, and then pushes that went through but whose answer was lost.
    async def bursts() -> None:
        for body in ({"fail_next": 15, "status": 429, "retry_after": 1}, {"fail_next": 15, "status": 500}):
            await control(stack, "POST", "/sandbox/faults", body)
            await line_control(
                stack, "/control/faults", {"count": 3, "endpoint": "POST /v2/bot/message/push", "status": 500}
            )
            await asyncio.sleep(rng.uniform(0.5, 1.5))
        await line_control(
            stack,
            "/control/faults",
            {"count": 3, "endpoint": "POST /v2/bot/message/push", "status": 500, "after": True},
        )
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        await control(stack, "POST", "/sandbox/faults", {"fail_next": 0})
        await line_control(stack, "/control/faults", {"count": 0})

    await asyncio.gather(traffic(ledger, clients, rooms, employee, 2 * quarter, quarter), bursts())
    scenarios += 1

    # (d) redelivery: updates Telegram is told to send again after a stop, and appservice
    # transactions replayed by the homeserver.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.telegram.url}/sandbox/state") as resp:
            replay_from = (await resp.json())["next_update_id"]
        async with http.get(f"{stack.line.url}/control/deliveries?payloads=0") as resp:
            line_from = len((await resp.json())["deliveries"])
    await traffic(ledger, clients, rooms, employee, 3 * quarter, MESSAGES - 3 * quarter)
    await bridge.stop()
    await control(stack, "POST", "/sandbox/redeliver", {"from_update_id": replay_from})
    await bridge.start()
    await line_control(stack, "/control/redeliver", {"since": line_from})
    replay = [
        {
            "type": "m.room.message",
            "room_id": e.room_id,
            "sender": e.sender,
            "event_id": e.event_id,
            "origin_server_ts": e.origin_server_ts,
            "content": e.content,
        }
        for e in employee.events
        if e.sender == employee.user_id and e.content.get("body", "").startswith("employee answers")
    ]
    headers = {"Authorization": f"Bearer {stack.registration.hs_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{stack.config.appservice.address}/_matrix/app/v1/transactions/replay-{uuid.uuid4().hex}",
            json={"events": replay[-100:]},
            headers=headers,
        ) as resp:
            assert resp.status == 200
    scenarios += 1

    # Let everything settle, then count.
    async def inbound_seen() -> dict[int, list[str]]:
        return {
            c: [
                e.content["body"]
                for e in employee.messages(rooms[c], sender=ghost_of(clients[c]))
                if e.content.get("body", "").startswith("client ")
            ]
            for c in range(CHATS)
        }

    async def outbound_seen() -> dict[int, list[str]]:
        out = {}
        for c, client in enumerate(clients):
            texts = [m.get("text", "") for m in await client.inbox()]
            out[c] = [t.split("\n", 1)[1] for t in texts if "\nemployee answers" in t]
        return out

    deadline = time.monotonic() + SETTLE_S
    while True:
        inbound, outbound = await inbound_seen(), await outbound_seen()
        complete = all(
            set(ledger.inbound.get(c, [])) <= set(inbound[c])
            and set(ledger.outbound.get(c, [])) <= set(outbound[c])
            for c in range(CHATS)
        )
        if complete or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)  # a late duplicate would show up now
    inbound, outbound = await inbound_seen(), await outbound_seen()

    lost = duplicated = reordered = by_network = 0
    for c in range(CHATS):
        for direction, expected, seen in (
            ("in", ledger.inbound.get(c, []), inbound[c]),
            ("out", ledger.outbound.get(c, []), outbound[c]),
        ):
            gone, twice, moved = tally(expected, seen)
            if gone or twice or moved:
                print(
                    f"chat {c} {direction}: lost={gone} duplicated={twice} reordered={moved}\n  expected={expected}\n  seen={seen}"
                )
            if direction == "in" and isinstance(clients[c], LineChat):
                # LINE does not keep webhooks in order: a redelivered event comes after the ones
                # sent meanwhile (LINE's documentation warns of it), and the bridge posts what
                # it receives as it receives it. Counted, not failed.
                by_network, moved = by_network + moved, 0
            lost, duplicated, reordered = lost + gone, duplicated + twice, reordered + moved
    sent = sum(len(v) for v in ledger.inbound.values()) + sum(len(v) for v in ledger.outbound.values())
    print(
        f"\nfaults: scenarios={scenarios} messages={sent} lost={lost} duplicated={duplicated} reordered={reordered}"
        f" reordered_by_line={by_network}"
    )
    assert (lost, duplicated, reordered) == (0, 0, 0), (
        f"lost={lost} duplicated={duplicated} reordered={reordered}"
    )
