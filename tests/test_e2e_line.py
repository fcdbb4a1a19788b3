"""LINE end to end: the sandbox LINE platform, the bridge process, a real Synapse and a
matrix-nio employee."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeProcess
from tests.support import SIGNATURE


class LineClient:
    """A LINE user played through the sandbox's control API."""

    def __init__(self, stack: DevStack, alias: str, name: str) -> None:
        assert stack.line is not None and stack.line.url
        self.base = stack.line.url
        self.alias = alias
        self.name = name
        self.user_id = ""

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
            async with http.request(method, f"{self.base}{path}", json=body) as resp:
                data = await resp.json()
                assert resp.status == 200, (path, resp.status, data)
                return data

    async def say(self, text: str) -> dict[str, Any]:
        sent = await self.call(
            "POST", f"/client/{self.alias}/messages", {"displayName": self.name, "text": text}
        )
        self.user_id = sent["userId"]
        return sent

    async def wait_for_text(self, needle: str) -> dict[str, Any]:
        after = ""
        for _ in range(6):
            got = await self.call("GET", f"/client/{self.alias}/messages?timeout=5{after}")
            for view in got["messages"]:
                if needle in (view.get("message") or {}).get("text", ""):
                    return view
            if got["messages"]:
                after = f"&after={got['messages'][-1]['seq']}"
        raise AssertionError(f"{self.alias} did not receive {needle!r}")


def ghost(stack: DevStack, user_id: str) -> str:
    return stack.config.ghost_namer().user_id("line", user_id)


async def test_a_line_client_is_bridged_both_ways(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client = LineClient(stack, f"lina{secrets.token_hex(4)}", "Lina Line")
    await client.say("Hello from LINE")
    msg = await employee.wait_for_message("Hello from LINE", sender=ghost(stack, client.user_id))
    assert msg.content["net.houseline.remote"]["network"] == "line"
    await employee.send_text(msg.room_id, "Hello Lina, how can we help?")
    got = await client.wait_for_text("Hello Lina, how can we help?")
    assert got["message"]["text"].startswith(SIGNATURE)
    # The disclaimer took the client message's reply token (free, single use); the answer
    # is a push, which counts against the month's quota.
    inbox = await client.call("GET", f"/client/{client.alias}/messages")
    assert [v["via"] for v in inbox["messages"]] == ["reply", "push"]
