"""WhatsApp Business (Cloud API), end to end: the sandbox's signed webhooks into real Synapse
rooms, employees on matrix-nio answering through the Graph API, the 24-hour window with
templates, delivery statuses, throughput errors, and the same policies and record as Telegram."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
from pathlib import Path

import aiohttp

from bridge.devstack import WHATSAPP_NUMBER, WHATSAPP_SECOND_NUMBER, DevStack
from sandbox.employee import Employee
from sandbox.whatsapp.client import WhatsAppClient, text_of
from tests.conftest import BridgeProcess
from tests.support import download, upload, BOT, SIGNATURE, bot_notice_about, bot_notice_in, eventually

_wa_ids = itertools.count(4_915_000_000_001 + (os.getpid() % 1000) * 1000)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def wa_client(stack: DevStack, name: str, to: str = WHATSAPP_NUMBER) -> WhatsAppClient:
    assert stack.whatsapp is not None
    return WhatsAppClient(stack.whatsapp.url, str(next(_wa_ids)), name, to)


def wa_ghost(client: WhatsAppClient) -> str:
    return f"@whatsapp_{client.wa_id}:localhost"


async def control(stack: DevStack, method: str, path: str, body: dict | None = None) -> dict:
    assert stack.whatsapp is not None
    async with aiohttp.ClientSession() as http:
        async with http.request(method, f"{stack.whatsapp.url}{path}", json=body) as resp:
            data = await resp.json()
            assert resp.status == 200, (path, resp.status, data)
            return data


async def open_portal(
    stack: DevStack, employee: Employee, name: str, text: str = "hello"
) -> tuple[WhatsAppClient, str, str]:
    client = wa_client(stack, name)
    wamid = await client.say(text)
    room = (await employee.wait_for_message(text, sender=wa_ghost(client))).room_id
    await client.wait_for_text("recorded")  # the WhatsApp disclaimer went out
    return client, room, wamid


async def test_text_both_ways_with_formatting_replies_and_read_receipts(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client = wa_client(stack, "Ada Lovelace")
    first = await client.say("Hi, is the *fund* still open?")
    seen = await employee.wait_for_message("Hi, is the *fund* still open?", sender=wa_ghost(client))
    room = seen.room_id
    assert "<strong>fund</strong>" in seen.content["formatted_body"]
    # Same policies: the WhatsApp disclaimer reaches the client.
    assert "This WhatsApp conversation with Example Advisers is recorded" in text_of(
        await client.wait_for_text("recorded")
    )
    ghost_name = await employee.client.get_displayname(wa_ghost(client))
    assert ghost_name.displayname == "Ada Lovelace (WhatsApp)"

    answer = await employee.send_text(
        room,
        "Yes, it is open",
        format="org.matrix.custom.html",
        formatted_body="<strong>Yes</strong>, it is <em>open</em>",
        **{"m.relates_to": {"m.in_reply_to": {"event_id": seen.event_id}}},
    )
    got = await client.wait_for_text("it is _open_")
    assert text_of(got) == f"*{SIGNATURE}*\n*Yes*, it is _open_"
    assert got["context"]["id"] == first  # a reply on the client's phone too

    # The client answers quoting the employee's message: a Matrix reply to it.
    await client.say("great, thanks", reply_to=got["id"])
    reply = await employee.wait_for_message("great, thanks", sender=wa_ghost(client))
    assert reply.content["m.relates_to"]["m.in_reply_to"]["event_id"] == answer

    # Employee reads -> WhatsApp mark-as-read; client reads -> a read receipt from the ghost.
    await employee.client.room_read_markers(room, reply.event_id, reply.event_id)

    async def marked_read() -> bool:
        history = (await client.history())["messages"]
        return any(m["id"] != first and m.get("read_by_business") for m in history if m["sender"] == "client")

    await eventually(marked_read, "the business read mark on WhatsApp")
    await client.read()

    def read_through_answer() -> bool:
        # The client read every company message, the disclaimer included; the disclaimer's
        # notice can land in the room after the answer when the employee is quick, and the
        # ghost's receipt is then on that notice, which is later than the answer.
        receipt = employee.client.rooms[room].read_receipts.get(wa_ghost(client))
        timeline = [e for e in employee.messages(room) if e.sender != wa_ghost(client)]
        ids = [e.event_id for e in timeline]
        return (
            receipt is not None
            and receipt.event_id in ids
            and ids.index(receipt.event_id) >= ids.index(answer)
        )

    await employee.wait_for(read_through_answer, 30, "the client's read receipt on the answer or later")


async def test_inbound_media_location_contacts_edits_revokes_and_reactions(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client, room, hello = await open_portal(stack, employee, "Grace Hopper")
    sent = await client.send_file("image", PNG, "chart.png", caption="my *chart*", mime_type="image/png")
    photo = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.image", 30, "the photo"
    )
    assert await download(employee, photo.content["url"]) == PNG
    assert photo.content["body"] == "my *chart*"

    await client.send_file("voice", b"OggS" + b"\0" * 200, "voice.ogg", mime_type="audio/ogg")
    voice = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.audio", 30, "the voice note"
    )
    assert voice.content["info"]["mimetype"] == "audio/ogg"
    await client.send_file("document", b"%PDF-1.4 terms", "terms.pdf", mime_type="application/pdf")
    doc = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.file", 30, "the document"
    )
    assert doc.content["filename"] == "terms.pdf"

    await client.share(
        location={"latitude": 52.52, "longitude": 13.405, "name": "Office", "address": "Main St 1"}
    )
    loc = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.location", 30, "the location"
    )
    assert loc.content["geo_uri"].startswith("geo:52.52") and ",13.405" in loc.content["geo_uri"]
    await client.share(
        contacts=[{"name": {"formatted_name": "Bo Smith"}, "phones": [{"phone": "+1 555 0123"}]}]
    )
    await employee.wait_for_event(
        lambda e: e.room_id == room and "Bo Smith" in e.content.get("body", ""), 30, "the contact"
    )
    await client.share(unsupported="poll")
    await employee.wait_for_event(bot_notice_in(room, "does not pass on"), 30, "the unsupported notice")

    await client.edit(hello, "hello there")
    edit = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("m.relates_to", {}).get("rel_type") == "m.replace",
        30,
        "the edit",
    )
    assert edit.content["m.new_content"]["body"] == "hello there"
    await client.revoke(sent["id"])
    await employee.wait_for_event(bot_notice_in(room, "deleted this message"), 30, "the revoke annotation")

    # Reactions: the client's on the employee's message, the employee's on the client's.
    answer = await employee.send_text(room, "noted")
    got = await client.wait_for_text("noted")
    await client.react(got["id"], "👍")
    await employee.wait_for_event(
        lambda e: (
            e.room_id == room and e.type == "m.reaction" and e.content["m.relates_to"]["event_id"] == answer
        ),
        30,
        "the client's reaction",
    )
    await employee.send_event(
        room,
        "m.reaction",
        {
            "m.relates_to": {
                "rel_type": "m.annotation",
                "event_id": edit.content["m.relates_to"]["event_id"],
                "key": "❤️",
            }
        },
    )

    async def reacted() -> bool:
        return any(
            r.get("emoji") == "❤️"
            for m in (await client.history())["messages"]
            for r in m.get("reactions", [])
        )

    await eventually(reacted, "the employee's reaction on WhatsApp")

    # What WhatsApp cannot do is said, not silently dropped.
    edited = await employee.send_text(
        room,
        "* noted!",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "noted!"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": answer},
        },
    )
    notice = await employee.wait_for_event(bot_notice_about(room, edited), 30, "the edit refusal")
    assert "does not let a business edit" in notice.content["body"]


async def test_outbound_media_and_file_limits(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client, room, _ = await open_portal(stack, employee, "Katherine Johnson")
    mxc = await upload(employee, PNG, "image/png", "q3.png")
    await employee.send_event(
        room,
        "m.room.message",
        {
            "msgtype": "m.image",
            "body": "Q3 results",
            "filename": "q3.png",
            "url": mxc,
            "info": {"mimetype": "image/png", "size": len(PNG)},
        },
    )
    got = await client.wait_for(lambda m: m.get("type") == "image", "the image")
    assert got["image"]["caption"] == f"*{SIGNATURE}*\nQ3 results"
    assert await client.media(got["image"]["media_id"]) == PNG

    zipped = await upload(employee, b"PK\x03\x04zip", "application/zip", "data.zip")
    refused = await employee.send_event(
        room,
        "m.room.message",
        {"msgtype": "m.file", "body": "data.zip", "url": zipped, "info": {"mimetype": "application/zip"}},
    )
    notice = await employee.wait_for_event(bot_notice_about(room, refused), 30, "the file type refusal")
    assert "does not accept files of type application/zip" in notice.content["body"]


async def test_24_hour_window_and_templates(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    assert stack.whatsapp is not None
    client, room, _ = await open_portal(stack, employee, "Mary Jackson")
    stack.whatsapp.advance_clock(25 * 3600)
    try:
        late = await employee.send_text(room, "are you still interested?")
        failed = await employee.wait_for_event(bot_notice_about(room, late), 30, "the failure notice")
        assert "more than 24 hours ago" in failed.content["body"] and "template" in failed.content["body"]
        # From now on free text is refused before it is sent.
        again = await employee.send_text(room, "hello?")
        refused = await employee.wait_for_event(bot_notice_about(room, again), 30, "the refusal")
        assert "template" in refused.content["body"]
        before = len(await client.inbox())

        templ = await employee.send_text(room, '!hl template follow_up "Mary"')
        got = await client.wait_for(lambda m: m.get("type") == "template", "the template")
        assert got["template"]["name"] == "follow_up" and got["template"]["parameters"] == ["Mary"]
        assert len(await client.inbox()) == before + 1  # the refused texts never reached the client
        wrong = await employee.send_text(room, "!hl template no_such_template")
        notice = await employee.wait_for_event(bot_notice_about(room, wrong), 30, "the template refusal")
        assert "refused the template" in notice.content["body"]
        assert not [
            e
            for e in employee.events
            if e.room_id == room
            and e.sender == BOT
            and e.content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == templ
        ]

        # The client writes again: the window is open again.
        await client.say("yes, call me")
        await employee.wait_for_message("yes, call me", sender=wa_ghost(client))
        await employee.send_text(room, "calling you now")
        await client.wait_for_text("calling you now")
    finally:
        stack.whatsapp.advance_clock(0)


async def test_throughput_errors_and_server_errors_are_retried_not_lost(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client, room, _ = await open_portal(stack, employee, "Dorothy Vaughan")
    await control(stack, "POST", "/control/faults", {"path": "messages", "count": 2, "code": 130429})
    await employee.send_text(room, "first after the limit")
    await control(
        stack, "POST", "/control/faults", {"path": "messages", "count": 2, "status": 500, "code": 131000}
    )
    await employee.send_text(room, "second after the errors")
    await client.wait_for_text("second after the errors", timeout=60)
    texts = [text_of(m) for m in await client.inbox() if "after the" in text_of(m)]
    assert texts == [f"*{SIGNATURE}*\nfirst after the limit", f"*{SIGNATURE}*\nsecond after the errors"]


async def test_webhook_refuses_forgeries_and_ignores_redeliveries(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    wa = stack.config.network("whatsapp")
    assert wa is not None and stack.whatsapp is not None
    url = f"http://{wa.listen_host}:{wa.listen_port}{wa.path}"
    client, room, _ = await open_portal(stack, employee, "Hedy Lamarr")
    forged = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "2001",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"display_phone_number": "15550100", "phone_number_id": "1001"},
                                "contacts": [{"profile": {"name": "Mallory"}, "wa_id": client.wa_id}],
                                "messages": [
                                    {
                                        "from": client.wa_id,
                                        "id": "wamid.FORGED",
                                        "timestamp": "1795400000",
                                        "type": "text",
                                        "text": {"body": "forged message"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()
    good = "sha256=" + hmac.new(stack.whatsapp.app_secret.encode(), b"{not json", hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as http:
        for headers, body, status in (
            ({}, forged, 403),
            ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, forged, 403),
            ({"X-Hub-Signature-256": good}, b"{not json", 400),
        ):
            async with http.post(
                url, data=body, headers={"Content-Type": "application/json", **headers}
            ) as resp:
                assert resp.status == status
        async with http.get(
            url, params={"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "x"}
        ) as resp:
            assert resp.status == 403
    assert "event=whatsapp_webhook_refused reason=bad_signature" in bridge.output

    # Meta redelivers: everything again, byte for byte; nothing appears twice.
    deliveries = (await control(stack, "GET", "/control/deliveries?payloads=0"))["deliveries"]
    await control(stack, "POST", "/control/redeliver", {"since": 1})
    await client.say("after the redelivery")
    await employee.wait_for_message("after the redelivery", sender=wa_ghost(client))
    assert len(employee.messages(room, body="hello")) == 1
    assert not employee.messages(room, body="forged message")
    assert len(deliveries) > 0


async def test_same_policies_and_record_for_whatsapp_portals(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, tmp_path: Path
) -> None:
    import subprocess
    import sys

    client, room, _ = await open_portal(stack, employee, "Annie Easley", "I want to open an account")
    denied = await employee.send_text(room, "pay with 4111 1111 1111 1111")
    notice = await employee.wait_for_event(bot_notice_about(room, denied), 30, "the denial")
    assert "sharing" in notice.content["body"].lower() or "not sent" in notice.content["body"].lower()
    await employee.send_text(room, "welcome aboard")
    await client.wait_for_text("welcome aboard")
    assert not [m for m in await client.inbox() if "4111" in text_of(m)]

    out = tmp_path / "wa-export"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "export",
            "-c",
            str(stack.config_path),
            "--room",
            room,
            "--format",
            "jsonl",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    bodies = [line["event"]["content"].get("body") for line in lines]
    assert "I want to open an account" in bodies and "pay with 4111 1111 1111 1111" in bodies
    client_line = next(
        line for line in lines if line["event"]["content"].get("body") == "I want to open an account"
    )
    assert client_line["remote"]["network"] == "whatsapp"
    verify = subprocess.run(
        [sys.executable, "-m", "bridge", "export", "verify", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout


async def test_several_company_numbers_each_with_their_own_portals(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    main = wa_client(stack, "Frances Allen")
    second = WhatsAppClient(main.sandbox_url, main.wa_id, main.name, WHATSAPP_SECOND_NUMBER)
    await main.say("to the main line")
    await second.say("to the second line")
    room_main = (await employee.wait_for_message("to the main line", sender=wa_ghost(main))).room_id
    room_second = (await employee.wait_for_message("to the second line", sender=wa_ghost(main))).room_id
    assert room_main != room_second  # one conversation per company number
    await employee.send_text(room_second, "answer from the second line")
    await second.wait_for_text("answer from the second line")
    assert not [m for m in await main.inbox() if "second line" in text_of(m)]


async def test_media_whatsapp_no_longer_has_is_a_notice_not_an_endless_retry(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client, room, _ = await open_portal(stack, employee, "Radia Perlman")
    await control(stack, "POST", "/control/faults", {"path": "media", "count": 1, "code": 100, "status": 400})
    await client.send_file("image", PNG, "gone.png", caption="the lost one", mime_type="image/png")
    notice = await employee.wait_for_event(
        bot_notice_in(room, "could not be brought over"), 30, "the unavailable-media notice"
    )
    assert "sent a photo" in notice.content["body"] and "the lost one" in notice.content["body"]
    await client.send_file("image", PNG, "fine.png", mime_type="image/png")
    photo = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.image", 30, "the next photo"
    )
    assert await download(employee, photo.content["url"]) == PNG
