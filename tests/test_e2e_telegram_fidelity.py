"""Full-fidelity Telegram, end to end: formatting, media, replies, edits, deletions, reactions,
typing — both directions through sandbox Telegram, the bridge process, Synapse and matrix-nio."""

from __future__ import annotations

import asyncio
import importlib.util
import struct
import time
import zlib

import aiohttp
import pytest

from bench.postgres import find_binaries, start_postgres

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeFactory, BridgeProcess
from tests.support import download, upload, SIGNATURE, bot_notice_about, control, ghost_of

SIG_LEN = len(SIGNATURE.encode("utf-16-le")) // 2


def png(width: int = 2, height: int = 3) -> bytes:
    """A real, tiny PNG (so that anything checking the image can)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def portal_with(client, employee: Employee, text: str = "hello") -> str:
    await client.say(text)
    return (await employee.wait_for_message(text, sender=ghost_of(client))).room_id


async def test_formatting_both_ways(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Fmt", "Client")
    text = "Hi 👍🏽 bold <script>x</script> and link"
    await client.say(
        text,
        entities=[
            {"type": "bold", "offset": 8, "length": 4},  # after a 4-unit emoji: "bold"
            {"type": "text_link", "offset": 36, "length": 4, "url": "https://example.com/a?b=1&c=2"},
        ],
    )
    msg = await employee.wait_for_message(text, sender=ghost_of(client))
    html = msg.content["formatted_body"]
    assert "<strong>bold</strong>" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>" not in html
    assert '<a href="https://example.com/a?b=1&amp;c=2">link</a>' in html

    await employee.send_text(
        msg.room_id,
        "Yes please read this",
        format="org.matrix.custom.html",
        formatted_body="<b>Yes</b> <i>please</i> <a href='https://example.org'>read</a> this",
    )
    got = await client.wait_for_text("Yes please read this")
    assert got["text"] == f"{SIGNATURE}\nYes please read this"
    base = SIG_LEN + 1
    assert {"type": "bold", "offset": 0, "length": SIG_LEN} in got["entities"]
    assert {"type": "bold", "offset": base, "length": 3} in got["entities"]
    assert {"type": "italic", "offset": base + 4, "length": 6} in got["entities"]
    assert {"type": "text_link", "offset": base + 11, "length": 4, "url": "https://example.org/"} in got[
        "entities"
    ] or {"type": "text_link", "offset": base + 11, "length": 4, "url": "https://example.org"} in got[
        "entities"
    ]


async def test_long_message_is_split_never_truncated(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Long", "Reader")
    room = await portal_with(client, employee)
    words = " ".join(f"word{i}" for i in range(1200))  # about 8,000 characters
    await employee.send_text(room, words)
    parts = await client.wait_until(
        lambda ms: (
            [m for m in ms if m.get("sender") != "client" and "word" in m.get("text", "")]
            if any("word1199" in m.get("text", "") for m in ms)
            else None
        ),
        "all parts",
    )
    assert len(parts) >= 2 and all(len(p["text"]) <= 4096 for p in parts)
    # Telegram trims each message, so the space at a cut is not shown; every word arrives, in order.
    assert " ".join(p["text"] for p in parts) == f"{SIGNATURE}\n{words}"


async def test_media_from_client_lands_in_the_record(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Media", "Sender")
    room = await portal_with(client, employee)
    image = png(4, 5)
    await client.send_file("photo", image, "scan.png", caption="my ID", width=4, height=5)
    photo = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.image", 30, "the photo"
    )
    assert photo.sender == ghost_of(client)
    assert photo.content["body"] == "my ID"
    assert photo.content["info"]["w"] > 0 and photo.content["info"]["h"] > 0
    assert photo.content["info"]["mimetype"].startswith("image/")
    # Telegram recompresses photos; the record holds exactly what Telegram delivered.
    own = next(m for m in await client.history() if "photo" in m)
    assert await download(employee, photo.content["url"]) == await client.file(own["photo"][-1]["file_id"])

    pdf = b"%PDF-1.4\n" + b"x" * 2000 + b"\n%%EOF"
    await client.send_file("document", pdf, "contract.pdf", mime_type="application/pdf")
    doc = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.file", 30, "the document"
    )
    assert doc.content["filename"] == "contract.pdf" and doc.content["info"]["size"] == len(pdf)
    assert doc.content["info"]["mimetype"] == "application/pdf"
    assert await download(employee, doc.content["url"]) == pdf

    voice = b"OggS" + b"\x00" * 500
    await client.send_file("voice", voice, "voice.ogg", duration=3, mime_type="audio/ogg")
    note = await employee.wait_for_event(
        lambda e: e.room_id == room and "org.matrix.msc3245.voice" in e.content, 30, "the voice note"
    )
    assert note.content["msgtype"] == "m.audio" and note.content["info"]["duration"] == 3000

    await client.share(location={"latitude": 52.52, "longitude": 13.405})
    loc = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.location", 30, "the location"
    )
    assert loc.content["geo_uri"] == "geo:52.520000,13.405000"


async def test_media_from_employee_reaches_client(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Media", "Receiver")
    room = await portal_with(client, employee)
    image = png(6, 7)
    mxc = await upload(employee, image, "image/png", "chart.png")
    await employee.send_event(
        room,
        "m.room.message",
        {
            "msgtype": "m.image",
            "body": "Q3 chart",
            "filename": "chart.png",
            "url": mxc,
            "info": {"mimetype": "image/png", "size": len(image), "w": 6, "h": 7},
        },
    )
    got = await client.wait_until(lambda ms: next((m for m in ms if "photo" in m), None), "the photo")
    assert got["caption"] == f"{SIGNATURE}\nQ3 chart"
    largest = got["photo"][-1]
    assert (largest["width"], largest["height"]) == (6, 7)
    assert (await client.file(largest["file_id"])).startswith(b"\xff\xd8")  # Telegram serves photos as JPEG

    doc = b"report " * 300
    mxc = await upload(employee, doc, "text/plain", "report.txt")
    await employee.send_event(
        room,
        "m.room.message",
        {
            "msgtype": "m.file",
            "body": "report.txt",
            "filename": "report.txt",
            "url": mxc,
            "info": {"mimetype": "text/plain", "size": len(doc)},
        },
    )
    got = await client.wait_until(lambda ms: next((m for m in ms if "document" in m), None), "the document")
    assert got["document"]["file_name"] == "report.txt"
    assert got["caption"] == SIGNATURE  # a file with no caption still says who sent it
    assert await client.file(got["document"]["file_id"]) == doc


async def test_replies_both_ways_survive_a_restart(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Rep", "Ly")
    sent = await client.say("question one")
    question = await employee.wait_for_message("question one", sender=ghost_of(client))
    await employee.send_text(
        question.room_id, "answer one", **{"m.relates_to": {"m.in_reply_to": {"event_id": question.event_id}}}
    )
    answer = await client.wait_for_text("answer one")
    assert answer["reply_to_message_id"] == sent["message_id"]

    assert await bridge.stop() == 0
    await bridge.start()
    answer_event = employee.messages(question.room_id, body="answer one")[0]
    await client.say("thanks for that", reply_to=answer["message_id"])
    thanks = await employee.wait_for_message("thanks for that", sender=ghost_of(client))
    assert thanks.content["m.relates_to"]["m.in_reply_to"]["event_id"] == answer_event.event_id


async def test_edits_both_ways_keep_the_original(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Ed", "It")
    sent = await client.say("meet at 3")
    original = await employee.wait_for_message("meet at 3", sender=ghost_of(client))
    await client.edit(sent["message_id"], "meet at 4")
    edit = await employee.wait_for_event(
        lambda e: (
            e.room_id == original.room_id and e.content.get("m.relates_to", {}).get("rel_type") == "m.replace"
        ),
        30,
        "the edit",
    )
    assert edit.sender == ghost_of(client)
    assert edit.content["m.relates_to"]["event_id"] == original.event_id
    assert edit.content["m.new_content"]["body"] == "meet at 4"
    resp = await employee.client.room_get_event(original.room_id, original.event_id)
    assert resp.event.source["content"]["body"] == "meet at 3"  # the original stays in the record

    mine = await employee.send_text(original.room_id, "see you at 4")
    delivered = await client.wait_for_text("see you at 4")
    await employee.send_event(
        original.room_id,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* see you at 5",
            "m.new_content": {"msgtype": "m.text", "body": "see you at 5"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": mine},
        },
    )
    edited = await client.wait_until(
        lambda ms: next(
            (m for m in ms if m["message_id"] == delivered["message_id"] and "5" in m.get("text", "")), None
        ),
        "the edit",
    )
    assert edited["text"] == f"{SIGNATURE}\nsee you at 5" and "edit_date" in edited


async def _reply_and_edit_right_behind(stack: DevStack, employee: Employee, client) -> None:
    await portal_with(client, employee)
    for round_ in range(4):
        # One fetch brings all three: the bridge's next getUpdates is answered 429 (retry after
        # 1 s), and the three are written meanwhile.
        await control(
            stack,
            "POST",
            "/sandbox/faults",
            {"fail_next": 1, "status": 429, "retry_after": 1, "methods": ["getUpdates"]},
        )
        await client.say(f"primer {round_}")
        await employee.wait_for_message(f"primer {round_}", sender=ghost_of(client))
        first = await client.say(f"first {round_}")
        await client.say(f"reply {round_}", reply_to=first["message_id"])
        await client.edit(first["message_id"], f"first {round_}, edited")
        original = await employee.wait_for_message(f"first {round_}", sender=ghost_of(client))
        reply = await employee.wait_for_message(f"reply {round_}", sender=ghost_of(client))
        assert reply.content["m.relates_to"]["m.in_reply_to"]["event_id"] == original.event_id
        edit = await employee.wait_for_event(
            lambda e: (
                e.room_id == original.room_id
                and e.content.get("m.relates_to", {}).get("event_id") == original.event_id
                and e.content.get("m.relates_to", {}).get("rel_type") == "m.replace"
            ),
            30,
            "the edit",
        )
        assert edit.content["m.new_content"]["body"] == f"first {round_}, edited"


async def test_a_reply_and_an_edit_right_behind_their_message_find_it(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    """A chat's next message is sent while the one before is still being recorded: what refers
    to that one (a reply, an edit) must wait for its record, not miss it."""
    await _reply_and_edit_right_behind(stack, employee, new_client("Right", "Behind"))


@pytest.mark.skipif(
    find_binaries() is None or importlib.util.find_spec("asyncpg") is None,
    reason="PostgreSQL (apt-get install postgresql) or asyncpg (pip install -e '.[postgres]') not installed",
)
async def test_a_reply_and_an_edit_right_behind_their_message_find_it_on_postgresql(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, new_client
) -> None:
    """The same with the store on PostgreSQL, whose pool lets a lookup overtake the commit before
    it (on SQLite one connection queues them)."""
    cluster = await start_postgres({"bridge": False})
    try:

        def on_postgres(config: dict) -> None:
            config["database"] = {"url": cluster.url("bridge")}

        proc = await own_bridge(config=on_postgres)
        try:
            await _reply_and_edit_right_behind(stack, employee, new_client("Right", "BehindPg"))
        finally:
            assert await proc.stop() == 0
    finally:
        await cluster.stop()


async def test_reactions_both_ways(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Re", "Act")
    sent = await client.say("good news!")
    msg = await employee.wait_for_message("good news!", sender=ghost_of(client))
    mine = await employee.send_text(msg.room_id, "indeed")
    delivered = await client.wait_for_text("indeed")

    await client.react(delivered["message_id"], ["👍"])
    reaction = await employee.wait_for_event(
        lambda e: e.type == "m.reaction" and e.room_id == msg.room_id, 30, "the client's reaction"
    )
    assert reaction.sender == ghost_of(client)
    assert reaction.content["m.relates_to"] == {"rel_type": "m.annotation", "event_id": mine, "key": "👍"}

    await employee.send_event(
        msg.room_id,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg.event_id, "key": "❤"}},
    )
    reacted = await client.wait_until(
        lambda ms: next(
            (m for m in ms if m["message_id"] == sent["message_id"] and m.get("reactions")), None
        ),
        "the bot's reaction",
    )
    assert [r["emoji"] for r in reacted["reactions"]] == ["❤"]

    bad = await employee.send_event(
        msg.room_id,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg.event_id, "key": "not-an-emoji"}},
    )
    notice = await employee.wait_for_event(
        bot_notice_about(msg.room_id, bad), 30, "a notice about the refused reaction"
    )
    assert "does not allow this emoji as a reaction" in notice.content["body"]


async def test_employee_cannot_erase_history_and_redaction_deletes_where_allowed(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Del", "Ete")
    room = await portal_with(client, employee)
    mine = await employee.send_text(room, "oops, wrong client")
    delivered = await client.wait_for_text("oops, wrong client")
    # Portal power levels keep the record: the employee's own redaction is refused.
    resp = await employee.client.room_redact(room, mine, reason="mistake")
    assert not hasattr(resp, "event_id"), resp

    # Where a company chose to allow it, the redaction deletes the message on Telegram.
    headers = {"Authorization": f"Bearer {stack.registration.as_token}"}
    state_url = f"{stack.homeserver.url}/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"
    async with aiohttp.ClientSession() as http:
        async with http.get(state_url, headers=headers) as r:
            levels = await r.json()
        levels["events"]["m.room.redaction"] = 0
        async with http.put(state_url, json=levels, headers=headers) as r:
            assert r.status == 200, await r.text()
    resp = await employee.client.room_redact(room, mine, reason="mistake")
    assert hasattr(resp, "event_id"), resp
    await client.wait_until(
        lambda ms: next(
            (m for m in ms if m["message_id"] == delivered["message_id"] and m.get("deleted")), None
        ),
        "the deletion",
    )


async def test_typing_shows_on_the_clients_side(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Ty", "Ping")
    room = await portal_with(client, employee)
    assert await client.chat_action() is None
    await employee.client.room_typing(room, typing_state=True, timeout=10000)
    deadline = time.monotonic() + 20
    while (action := await client.chat_action()) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert action is not None and action["action"] == "typing"


async def test_network_limits_are_explained_and_nothing_is_dropped(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Lim", "Its")
    room = await portal_with(client, employee)

    # A caption longer than Telegram's 1024 characters: the file goes with the signature, the
    # caption follows as a message replying to it, and the room is told.
    caption = "Terms: " + "x" * 1500
    image = png(3, 3)
    mxc = await upload(employee, image, "image/png", "terms.png")
    sent = await employee.send_event(
        room,
        "m.room.message",
        {
            "msgtype": "m.image",
            "body": caption,
            "filename": "terms.png",
            "url": mxc,
            "info": {"mimetype": "image/png", "size": len(image)},
        },
    )
    photo = await client.wait_until(lambda ms: next((m for m in ms if "photo" in m), None), "the photo")
    assert photo["caption"] == SIGNATURE
    follow = await client.wait_until(
        lambda ms: next((m for m in ms if m.get("text", "").startswith("Terms: ")), None), "the caption"
    )
    assert follow["text"] == caption and follow["reply_to_message_id"] == photo["message_id"]
    note = await employee.wait_for_event(bot_notice_about(room, sent), 30, "the caption notice")
    assert "longer than Telegram allows (1024 characters)" in note.content["body"]

    # A file over the 50 MB a bot may upload is refused before any download, with the reason.
    big = await employee.send_event(
        room,
        "m.room.message",
        {
            "msgtype": "m.file",
            "body": "archive.zip",
            "filename": "archive.zip",
            "url": mxc,
            "info": {"mimetype": "application/zip", "size": 60_000_000},
        },
    )
    refusal = await employee.wait_for_event(bot_notice_about(room, big), 30, "the size refusal")
    assert "at most 50 MB" in refusal.content["body"]

    # A client's file over the 20 MB a bot may download: a notice says so, with the caption.
    await client.send_file(
        "document", b"\0" * (21 * 1024 * 1024), "scan.tiff", caption="all pages", mime_type="image/tiff"
    )
    toobig = await employee.wait_for_event(
        lambda e: e.room_id == room and "could not be brought over" in e.content.get("body", ""),
        60,
        "the download notice",
    )
    assert "20 MB" in toobig.content["body"] and "all pages" in toobig.content["body"]
