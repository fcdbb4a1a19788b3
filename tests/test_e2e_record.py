"""The record, end to end: a realistic conversation goes through the sandbox (text, media, a
reply, edits, a client deletion, a denied attempt), is exported in all three formats, each
format's content is checked, and `export verify` catches a changed byte, a removed line and a
reordered event. `record check` finds the message map and the rooms in agreement."""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import aiohttp

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeFactory, BridgeProcess
from tests.support import BOT, bot_notice_about, bot_notice_in, control, ghost

_owners = itertools.count(8_500_000_001)


def houseline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=120
    )


async def business_file(
    stack: DevStack, conn: str, client_id: int, data: bytes, name: str, caption: str
) -> dict:
    form = aiohttp.FormData()
    for key, value in {
        "kind": "photo",
        "caption": caption,
        "first_name": "Rec",
        "last_name": "Ord",
        "width": "4",
        "height": "4",
    }.items():
        form.add_field(key, value)
    form.add_field("file", data, filename=name)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.telegram.url}/business/{conn}/clients/{client_id}/messages", data=form
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


async def test_conversation_exports_in_every_format_and_verifies(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, tmp_path: Path
) -> None:
    from tests.test_e2e_telegram_fidelity import png

    owner = next(_owners)
    conn = (
        await control(stack, "POST", "/business/connect", {"owner_id": owner, "owner_first_name": "Rhea"})
    )["id"]
    client_id = next(_owners)
    biz = f"/business/{conn}/clients/{client_id}/messages"
    first = await control(
        stack,
        "POST",
        biz,
        {"text": "I'd like to invest <script>alert(1)</script>", "first_name": "Rec", "last_name": "Ord"},
    )
    question = await employee.wait_for_message(
        "I'd like to invest <script>alert(1)</script>", sender=ghost(client_id)
    )
    room = question.room_id
    photo = await business_file(stack, conn, client_id, png(4, 4), "id.png", "my ID")
    await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.image", 30, "the photo"
    )
    await employee.send_text(
        room, "Happy to help", **{"m.relates_to": {"m.in_reply_to": {"event_id": question.event_id}}}
    )
    denied = await employee.send_text(room, "pay with 4111 1111 1111 1111")
    await employee.wait_for_event(bot_notice_about(room, denied), 30, "the denial")
    await control(stack, "POST", f"{biz}/{first['message_id']}/edit", {"text": "I'd like to invest 10k"})
    await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("m.relates_to", {}).get("rel_type") == "m.replace",
        30,
        "the edit",
    )
    await control(stack, "POST", f"{biz}/{photo['message_id']}/delete", {})
    await employee.wait_for_event(bot_notice_in(room, "deleted this message"), 30, "the deletion annotation")
    in_room = {e.event_id for e in employee.events if e.room_id == room}

    config = ["-c", str(stack.config_path)]
    out = {}
    for fmt in ("jsonl", "eml", "html"):
        out[fmt] = tmp_path / fmt
        done = houseline("export", *config, "--client", str(client_id), "--format", fmt, "-o", str(out[fmt]))
        assert done.returncode == 0, done.stderr
        assert "exported 1 conversation(s)" in done.stdout
        ok = houseline("export", "verify", str(out[fmt]))
        assert ok.returncode == 0, ok.stdout

    # JSONL: every event of the room, unchanged, with the remote ids.
    lines = [json.loads(line) for line in (out["jsonl"] / "events.jsonl").read_text().splitlines()]
    exported = {line["event"]["event_id"] for line in lines}
    assert in_room <= exported
    client_line = next(line for line in lines if line["event"]["event_id"] == question.event_id)
    assert client_line["event"]["content"]["body"] == question.content["body"]
    assert client_line["remote"]["message_id"] == str(first["message_id"])
    manifest = json.loads((out["jsonl"] / "manifest.json").read_text())
    assert manifest["events"]["count"] == len(lines) and len(manifest["events"]["chain"]) == 64

    # EML: parsed back with the email package.
    messages = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted((out["eml"] / "eml").rglob("*.eml"))
    ]
    kinds = [m["X-Houseline-Kind"] for m in messages]
    assert {"message", "edit", "client-deleted", "denied"} <= set(kinds), kinds
    original = next(m for m in messages if m["X-Houseline-Event-Id"] == question.event_id)
    assert "Rec Ord" in original["From"] and original["Date"] and original["Message-ID"]
    edit = next(m for m in messages if m["X-Houseline-Kind"] == "edit")
    assert question.event_id.strip("$") in edit["In-Reply-To"].replace("$", "")
    # Telegram hands photos over as JPEG "photo.jpg"; the attachment is exactly the recorded file.
    image = next(m for m in messages if any(True for _ in m.iter_attachments()))
    attachment = next(iter(image.iter_attachments()))
    assert attachment.get_content_type() == "image/jpeg"
    assert (
        attachment.get_content()
        == (out["jsonl"] / next(line["media_file"] for line in lines if "media_file" in line)).read_bytes()
    )

    # HTML: a readable transcript, nothing live in it.
    page = next(p for p in (out["html"] / "html").glob("*.html") if p.name != "index.html")
    parser = _Tags()
    parser.feed(page.read_text())
    assert all(tag != "script" for tag, _ in parser.tags)
    text = " ".join(parser.text)
    assert "<script>alert(1)</script>" in text  # shown as text, escaped in the file
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert images and all((page.parent / src).resolve().exists() for src in images)
    assert "deleted by the client" in text.lower() and "not sent" in text.lower()

    # verify catches a changed byte, a removed line and a reordered event.
    media = next((out["jsonl"] / "media").rglob("*.*"))
    blob = bytearray(media.read_bytes())
    blob[-1] ^= 0x01
    media.write_bytes(bytes(blob))
    changed = houseline("export", "verify", str(out["jsonl"]))
    assert (
        changed.returncode == 1
        and f"file {media.relative_to(out['jsonl']).as_posix()} was altered" in changed.stdout
    )

    events_file = out["eml"] / "events.jsonl"
    raw = events_file.read_text().splitlines(keepends=True)
    events_file.write_text("".join(raw[:3] + raw[4:]))
    removed = houseline("export", "verify", str(out["eml"]))
    assert removed.returncode == 1 and "removed" in removed.stdout

    events_file = out["html"] / "events.jsonl"
    raw = events_file.read_text().splitlines(keepends=True)
    raw[2], raw[3] = raw[3], raw[2]
    events_file.write_text("".join(raw))
    reordered = houseline("export", "verify", str(out["html"]))
    assert reordered.returncode == 1 and "out of order at line 3" in reordered.stdout

    # The message map and the room agree.
    check = houseline("record", "check", *config, "--room", room)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 problem(s)" in check.stdout


async def test_admin_exports_from_the_bot(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, staff, new_client
) -> None:
    from tests.support import open_dm

    client = new_client("Ex", "Port")
    await client.say("please keep this")
    room = (
        await employee.wait_for_message("please keep this", sender=f"@telegram_{client.user_id}:localhost")
    ).room_id
    admin = staff["admin"]
    dm = await open_dm(admin)
    await admin.send_text(dm, f"!hl export {room} jsonl")
    reply = await admin.wait_for_event(
        lambda e: e.room_id == dm and e.sender == BOT and "Exported" in e.content.get("body", ""),
        60,
        "the export reply",
    )
    where = reply.content["body"].split(" to ", 1)[1].split(" on the bridge")[0]
    assert houseline("export", "verify", where).returncode == 0
    lines = (Path(where) / "events.jsonl").read_text()
    assert "please keep this" in lines


async def test_retention_lists_and_purges_only_what_is_expired_and_not_held(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client, tmp_path: Path
) -> None:
    """Its own bridge and store (so the purge touches only its portals)."""
    from tests.support import open_dm

    bridge = await own_bridge()
    path = bridge.config_path
    try:
        rooms = []
        for name in ("Old", "Held"):
            client = new_client(name, "Timer")
            await client.say(f"{name} conversation")
            rooms.append(
                (
                    await employee.wait_for_message(
                        f"{name} conversation", sender=f"@telegram_{client.user_id}:localhost"
                    )
                ).room_id
            )
        admin = staff["admin"]
        dm = await open_dm(admin)
        await admin.send_text(dm, f"!hl hold {rooms[1]}")
        await admin.wait_for_event(
            lambda e: e.room_id == dm and e.sender == BOT and "Legal hold on" in e.content.get("body", ""),
            30,
            "the hold",
        )
    finally:
        assert await bridge.stop() == 0

    args = ["record", "expired", "-c", str(path)]
    today = houseline(*args)
    assert today.returncode == 0 and "0 conversation(s) past retention" in today.stdout
    later = houseline(*args, "--as-of", "2040-01-01")  # beyond the test policy's 6-7 years
    assert (
        "1 conversation(s) past retention" in later.stdout
        and rooms[0] in later.stdout
        and rooms[1] not in later.stdout
    )

    hs_admin = await stack.homeserver.register_user(
        f"hsadmin{tmp_path.name[-6:]}".lower().replace("_", ""), "pw-" + tmp_path.name, admin=True
    )
    token_file = tmp_path / "admin-token"
    token_file.write_text(hs_admin.access_token)
    purged = houseline(*args, "--as-of", "2040-01-01", "--purge", "--admin-token-file", str(token_file))
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert f"purged {rooms[0]}" in purged.stdout and rooms[1] not in purged.stdout.split("past retention")[1]

    # The CLI says "purged" only once Synapse reports the delete complete (it retries the deletes
    # Synapse fails, element-hq/synapse#19822): the room is gone by then.
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{stack.homeserver.url}/_synapse/admin/v1/rooms/{rooms[0]}",
            headers={"Authorization": f"Bearer {hs_admin.access_token}"},
        ) as resp:
            assert resp.status == 404, await resp.text()
    shown = houseline("audit", "show", "-c", str(path)).stdout
    assert f"record.purge allow [retention] by houseline-cli on {rooms[0]}" in shown
    assert (
        houseline("record", "expired", "-c", str(path), "--as-of", "2040-01-01").stdout.count(
            "past retention"
        )
        == 1
    )
