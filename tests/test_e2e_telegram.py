"""End to end: sandbox Telegram ⇄ bridge process ⇄ real Synapse ⇄ matrix-nio employee."""

from __future__ import annotations

import secrets

import aiohttp
import yaml

from bridge.devstack import COMPANY, DevStack
from sandbox.employee import Employee
from sandbox.homeserver import free_port
from tests.conftest import BridgeProcess
from tests.support import bot_notice_in, eventually, ghost_of


async def room_state(employee: Employee, room_id: str) -> dict[tuple[str, str], dict]:
    """Current state as {(type, state_key): event}."""
    resp = await employee.client.room_get_state(room_id)
    assert hasattr(resp, "events"), resp
    return {(e["type"], e.get("state_key", "")): e for e in resp.events}


async def test_first_contact_creates_portal_and_ghost(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Dana", "Client")
    await client.say("Hello, is anyone there?")
    msg = await employee.wait_for_message("Hello, is anyone there?", sender=ghost_of(client))
    assert msg.content["msgtype"] == "m.text"
    assert msg.content["net.houseline.remote"]["chat_id"] == str(client.user_id)

    state = await room_state(employee, msg.room_id)
    bot = "@houseline:localhost"
    assert state[("m.room.name", "")]["content"]["name"] == "Dana Client (Telegram)"
    assert state[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"
    create = state[("m.room.create", "")]
    assert create["sender"] == bot
    # The bot holds full power: listed at 100 up to room v11, privileged as creator from v12.
    power = state[("m.room.power_levels", "")]["content"]
    version = create["content"].get("room_version", "1")
    assert (version.isdigit() and int(version) >= 12) or power["users"][bot] == 100
    assert power.get("users", {}).get(employee.user_id, power["users_default"]) < 100
    assert power["redact"] == 100 and power["invite"] == 100 and power["state_default"] == 100
    bridges = [e["content"] for (t, _), e in state.items() if t == "m.bridge"]
    assert len(bridges) == 1
    assert bridges[0]["bridgebot"] == bot
    assert bridges[0]["protocol"]["id"] == "telegram"
    assert bridges[0]["channel"]["id"] == str(client.user_id)
    assert state[("m.room.member", ghost_of(client))]["content"]["displayname"] == "Dana Client (Telegram)"
    assert state[("m.room.member", employee.user_id)]["content"]["membership"] == "join"

    # A second message from the same client lands in the same portal, not a new one.
    invites_before = len(employee.invites)
    await client.say("Second message")
    second = await employee.wait_for_message("Second message", sender=ghost_of(client))
    assert second.room_id == msg.room_id
    assert len(employee.invites) == invites_before


async def test_employee_answer_reaches_client_signed(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Émile", "Zoë")
    await client.say("Can you call me? 📞")
    msg = await employee.wait_for_message("Can you call me? 📞", sender=ghost_of(client))
    await employee.send_text(msg.room_id, "Of course — at 3 pm 🙂")
    got = await client.wait_for_text("Of course — at 3 pm 🙂")
    signature = f"Erin Employee ({COMPANY})"
    assert got["text"] == f"{signature}\nOf course — at 3 pm 🙂"
    assert got["entities"] == [
        {"type": "bold", "offset": 0, "length": len(signature.encode("utf-16-le")) // 2}
    ]
    # The employee's personal account is nowhere in what the client sees.
    assert employee.user_id not in got["text"]


async def test_redelivered_update_posts_once(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Red", "Elivery")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.telegram.url}/sandbox/state") as resp:
            update_id = (await resp.json())["next_update_id"]
        await client.say("only once please")
        first = await employee.wait_for_message("only once please", sender=ghost_of(client))
        await employee.wait_for_event(
            bot_notice_in(first.room_id, "Disclaimer sent to the client"), 30, "the disclaimer"
        )

        # The update is committed after every step that follows a client's message (the
        # disclaimer is one of several); Telegram sees it confirmed by the bridge's next poll.
        async def confirmed() -> bool:
            async with http.get(f"{stack.telegram.url}/sandbox/state") as resp:
                return (await resp.json())["pending_update_count"] == 0

        await eventually(confirmed, "the bridge to confirm the update")
        assert await bridge.stop() == 0
        # As if the confirmation never reached Telegram: the update comes back on the next poll.
        async with http.post(
            f"{stack.telegram.url}/sandbox/redeliver", json={"from_update_id": update_id}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["redelivered"] == 1
    await bridge.start()
    await client.say("and this after it")
    await employee.wait_for_message("and this after it", sender=ghost_of(client))
    assert len(employee.messages(body="only once please", sender=ghost_of(client))) == 1
    assert "event=inbound_duplicate" in bridge.output


async def test_restart_keeps_portals_and_mapping(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Rey", "Start")
    await client.say("before restart")
    first = await employee.wait_for_message("before restart", sender=ghost_of(client))
    assert await bridge.stop() == 0
    await bridge.start()
    invites_before = len(employee.invites)
    await client.say("after restart")
    second = await employee.wait_for_message("after restart", sender=ghost_of(client))
    assert second.room_id == first.room_id
    assert len(employee.invites) == invites_before
    await employee.send_text(first.room_id, "welcome back")
    await client.wait_for_text("welcome back")


async def test_wrong_hs_token_is_refused_and_changes_nothing(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Tok", "En")
    await client.say("token test")
    msg = await employee.wait_for_message("token test", sender=ghost_of(client))
    url = f"{stack.config.appservice.address}/_matrix/app/v1/transactions/forged-1"
    forged = {
        "events": [
            {
                "type": "m.room.message",
                "room_id": msg.room_id,
                "sender": employee.user_id,
                "event_id": "$forged-event",
                "origin_server_ts": 1,
                "content": {"msgtype": "m.text", "body": "FORGED"},
            }
        ]
    }
    async with aiohttp.ClientSession() as http:
        async with http.put(url, json=forged) as resp:
            assert resp.status == 401
            assert (await resp.json())["errcode"] == "M_UNAUTHORIZED"
        async with http.put(url, json=forged, headers={"Authorization": "Bearer " + "x" * 64}) as resp:
            assert resp.status == 403
            assert (await resp.json())["errcode"] == "M_FORBIDDEN"
        async with http.put(url + "?access_token=wrong", json=forged) as resp:
            assert resp.status == 403
        # Not JSON, with the right token: a clear 400, and the bridge keeps running.
        headers = {"Authorization": f"Bearer {stack.registration.hs_token}"}
        async with http.put(url.replace("forged-1", "garbage-1"), data=b"{not json", headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["errcode"] == "M_NOT_JSON"
    await employee.send_text(msg.room_id, "real answer after the forgeries")
    await client.wait_for_text("real answer after the forgeries")
    assert all("FORGED" not in m["text"] for m in await client.inbox())
    assert "event=as_auth_refused reason=wrong_token" in bridge.output


async def test_unsupported_kind_gets_a_notice(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Pol", "Ling")
    await client.say("what do you all think?")
    msg = await employee.wait_for_message("what do you all think?", sender=ghost_of(client))
    poll = await employee.send_event(
        msg.room_id,
        "org.matrix.msc3381.poll.start",
        {
            "org.matrix.msc3381.poll.start": {
                "question": {"org.matrix.msc1767.text": "Lunch?"},
                "answers": [],
            },
            "org.matrix.msc1767.text": "Lunch?",
        },
    )
    missing = await employee.send_event(
        msg.room_id,
        "m.room.message",
        {
            "msgtype": "m.image",
            "body": "brochure.png",
            "url": "mxc://localhost/doesnotexist",
            "info": {"mimetype": "image/png"},
        },
    )
    for event_id, words in (
        (poll, "Polls are not sent to the client"),
        (missing, "could not be fetched from the homeserver (HTTP 404)"),
    ):
        notice = await employee.wait_for_event(
            lambda e: (
                e.room_id == msg.room_id
                and e.sender == "@houseline:localhost"
                and e.content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == event_id
            ),
            30,
            f"a notice about {event_id}",
        )
        assert notice.content["msgtype"] == "m.notice"
        assert words in notice.content["body"]
    # Neither blocked the room: the next text still goes out.
    await employee.send_text(msg.room_id, "text still works")
    await client.wait_for_text("text still works")
    assert all("Lunch" not in m.get("text", "") for m in await client.inbox())


async def test_failed_send_is_reported_in_the_room(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Block", "Er")
    await client.say("I will block you")
    msg = await employee.wait_for_message("I will block you", sender=ghost_of(client))
    await client.block()
    sent = await employee.send_text(msg.room_id, "are you still there?")
    notice = await employee.wait_for_event(
        lambda e: (
            e.room_id == msg.room_id
            and e.sender == "@houseline:localhost"
            and e.content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == sent
        ),
        30,
        "a delivery failure notice",
    )
    assert notice.content["body"].startswith(
        "Not delivered to the client: the client blocked the company's bot"
    )
    assert all("are you still there" not in m.get("text", "") for m in await client.inbox())


async def test_sigterm_stops_cleanly(stack: DevStack, bridge: BridgeProcess) -> None:
    assert await bridge.stop() == 0
    assert "event=stopped" in bridge.output


async def test_webhook_mode_round_trip(stack: DevStack, employee: Employee, new_client) -> None:
    """The same conversation with updates pushed by Telegram instead of polled."""
    config = yaml.safe_load(stack.config_path.read_text())
    port = free_port()
    secret = secrets.token_urlsafe(32)
    config["networks"]["telegram"]["webhook"] = {
        "enabled": True,
        "public_url": f"http://127.0.0.1:{port}/telegram/webhook",
        "listen_port": port,
        "secret_token": secret,
    }
    path = stack.config_path.with_name("config-webhook.yaml")
    path.write_text(yaml.safe_dump(config))
    proc = BridgeProcess(path)
    await proc.start()
    try:
        assert "mode=webhook" in proc.output
        client = new_client("Web", "Hook")
        await client.say("pushed, not polled")
        msg = await employee.wait_for_message("pushed, not polled", sender=ghost_of(client))
        await employee.send_text(msg.room_id, "answer in webhook mode")
        await client.wait_for_text("answer in webhook mode")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{stack.telegram.url}/bot{stack.telegram.token}/getWebhookInfo") as resp:
                info = (await resp.json())["result"]
        assert (
            info["url"] == f"http://127.0.0.1:{port}/telegram/webhook" and info["pending_update_count"] == 0
        )
    finally:
        assert await proc.stop() == 0
    assert secret not in proc.output
