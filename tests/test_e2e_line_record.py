"""The record covers LINE conversations as it covers Telegram's: a LINE client (played through the
LINE sandbox) talks to an employee on a real Synapse through the real bridge process, and

- the conversation (a text with emoji, a picture, the employee's answer, a refused attempt, the
  client unsending the picture) is exported in all three formats, each carries the LINE texts,
  the picture's exact bytes, the network "line" and the unsend annotation, `export verify` says
  OK, and a single changed byte in any of them makes it fail; `record check` finds the message
  map and the room in agreement;
- an admin exports a LINE conversation from the policy bot, naming it by the LINE user id;
- retention judges LINE conversations by LINE's period (the policy's default, not Telegram's),
  lists and purges an expired one and keeps the one under legal hold.

Modelled on tests/test_e2e_record.py; the LINE client helpers are tests/test_e2e_line.py's."""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeFactory, BridgeProcess
from tests.support import bot_notice_about, command, open_dm
from tests.test_e2e_line import (
    DISCLAIMER,
    LineClient,
    b64,
    ghost,
    in_room,
    new_client,
    open_portal,
    utf16_index,
)

#: Retention in tests/policy.yaml: LINE has no period of its own, so the default (7y, a year
#: counting 366 days) applies, not Telegram's 6y.
LINE_RETENTION_DAYS = 7 * 366
TELEGRAM_RETENTION_DAYS = 6 * 366


def houseline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=120
    )


def jpeg() -> bytes:
    """A small real JPEG: what LINE hands a bot for any picture a client sends."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 90)).save(out, "JPEG", quality=90)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def flip_byte(path: Path, at: int = -1) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x01
    path.write_bytes(bytes(blob))


async def test_a_line_conversation_exports_in_every_format_and_verifies(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, tmp_path: Path
) -> None:
    client = new_client(stack, "Rin Record")
    # A Unicode emoji, a LINE emoji (its alt text is in the text) and markup that must stay text.
    text = "I'd like to invest 🍎 (love) <script>alert(1)</script>"
    first = await client.send(
        text=text,
        emojis=[
            {
                "index": utf16_index(text, "(love)"),
                "length": 6,
                "productId": "5ac1bfd5040ab15980c9b435",
                "emojiId": "001",
            }
        ],
    )
    sender = ghost(stack, client.user_id)
    question = await employee.wait_for_message(text, sender=sender)
    room = question.room_id
    await client.wait_for_text(DISCLAIMER)  # the disclaimer took the reply token

    picture = jpeg()
    photo_sent = await client.send(image=b64(picture))
    photo = await employee.wait_for_event(in_room(room, "m.image"), 30, "the picture")
    assert photo.sender == sender
    await employee.send_text(
        room, "Happy to help", **{"m.relates_to": {"m.in_reply_to": {"event_id": question.event_id}}}
    )
    await client.wait_for_text("Happy to help")
    denied = await employee.send_text(room, "pay with 4111 1111 1111 1111")
    await employee.wait_for_event(bot_notice_about(room, denied), 30, "the denial")
    await client.unsend(photo_sent["id"])
    unsent = await employee.wait_for_event(bot_notice_about(room, photo.event_id), 30, "the unsend note")
    assert "deleted this message on LINE" in unsent.content["body"]
    in_room_ids = {e.event_id for e in employee.events if e.room_id == room}

    config = ["-c", str(stack.config_path)]
    out: dict[str, Path] = {}
    for fmt in ("jsonl", "eml", "html"):
        out[fmt] = tmp_path / fmt
        done = houseline("export", *config, "--client", client.user_id, "--format", fmt, "-o", str(out[fmt]))
        assert done.returncode == 0, done.stderr
        assert "exported 1 conversation(s)" in done.stdout
        ok = houseline("export", "verify", str(out[fmt]))
        assert ok.returncode == 0 and "export OK" in ok.stdout, ok.stdout

    # JSONL: every event of the room, unchanged, with LINE's ids.
    lines = [json.loads(line) for line in (out["jsonl"] / "events.jsonl").read_text().splitlines()]
    exported = {line["event"]["event_id"] for line in lines}
    assert in_room_ids <= exported
    assert {line["portal"]["network"] for line in lines} == {"line"}
    assert {line["portal"]["chat_id"] for line in lines} == {client.user_id}
    by_id = {line["event"]["event_id"]: line for line in lines}
    client_line = by_id[question.event_id]
    assert client_line["event"]["content"]["body"] == text
    assert client_line["remote"]["network"] == "line"
    assert client_line["remote"]["message_id"] == first["id"]
    assert client_line["remote"]["sender_id"] == client.user_id
    assert by_id[photo.event_id]["remote"]["message_id"] == photo_sent["id"]
    answer = next(line for line in lines if line["event"]["content"].get("body") == "Happy to help")
    assert answer["event"]["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == question.event_id
    note = by_id[unsent.event_id]["event"]["content"]
    assert note["net.houseline.client_deleted"]["event_id"] == photo.event_id
    # The picture: the client's bytes exactly, and so sealed in the manifest.
    media_file = by_id[photo.event_id]["media_file"]
    assert (out["jsonl"] / media_file).read_bytes() == picture
    manifest = json.loads((out["jsonl"] / "manifest.json").read_text())
    assert {"path": media_file, "sha256": sha256(picture), "size": len(picture)} in manifest["files"]
    assert manifest["events"]["count"] == len(lines) and len(manifest["events"]["chain"]) == 64

    # EML: parsed back with the email package.
    messages = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted((out["eml"] / "eml").rglob("*.eml"))
    ]
    kinds = [m["X-Houseline-Kind"] for m in messages]
    assert {"message", "client-deleted", "denied"} <= set(kinds), kinds
    assert {m["X-Houseline-Network"] for m in messages} == {"line"}
    original = next(m for m in messages if m["X-Houseline-Event-Id"] == question.event_id)
    origin = original["From"].addresses[0]
    assert "Rin Record" in origin.display_name
    assert origin.addr_spec == f"line-{client.user_id}@houseline.invalid"
    assert original["X-Houseline-Remote-Message-Id"] == first["id"]
    assert text in original.get_body(("plain",)).get_content()
    image = next(m for m in messages if m["X-Houseline-Event-Id"] == photo.event_id)
    assert image["X-Houseline-Client-Deleted-At"]
    attachment = next(iter(image.iter_attachments()))
    assert attachment.get_content_type() == "image/jpeg"
    assert attachment.get_content() == picture
    deletion = next(m for m in messages if m["X-Houseline-Kind"] == "client-deleted")
    assert deletion["X-Houseline-Deleted-Event-Id"] == photo.event_id
    assert photo.event_id.strip("$") in deletion["In-Reply-To"].replace("$", "")
    assert "The client deleted the message" in deletion.get_body(("plain",)).get_content()

    # HTML: a readable transcript, nothing live in it.
    page = next(p for p in (out["html"] / "html").glob("*.html") if p.name != "index.html")
    raw_page = page.read_text()
    assert "<dt>Network</dt><dd>line</dd>" in raw_page
    parser = _Tags()
    parser.feed(raw_page)
    assert all(tag != "script" for tag, _ in parser.tags)
    shown = " ".join(parser.text)
    assert text in shown  # the emoji kept, the markup shown as text (escaped in the file)
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 1 and (page.parent / images[0]).resolve().read_bytes() == picture
    assert "deleted by the client" in shown.lower() and "not sent" in shown.lower()
    assert "Happy to help" in shown

    # One changed byte, in a file or in an event, and verification fails naming it.
    media = out["jsonl"] / media_file
    flip_byte(media)
    changed = houseline("export", "verify", str(out["jsonl"]))
    assert changed.returncode == 1 and f"file {media_file} was altered" in changed.stdout, changed.stdout

    events_file = out["eml"] / "events.jsonl"
    raw = events_file.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(raw) if question.event_id.encode() in line)
    raw[at] = raw[at].replace(b"invest", b"invesT", 1)
    events_file.write_bytes(b"".join(raw))
    altered = houseline("export", "verify", str(out["eml"]))
    assert altered.returncode == 1, altered.stdout
    assert (
        f"event {at + 1} (line {at + 1} of events.jsonl, {question.event_id}) was altered" in altered.stdout
    )

    flip_byte(page, raw_page.encode().index(b"invest"))
    edited_page = houseline("export", "verify", str(out["html"]))
    assert edited_page.returncode == 1, edited_page.stdout
    assert f"file {page.relative_to(out['html']).as_posix()} was altered" in edited_page.stdout

    # The message map and the room agree.
    check = houseline("record", "check", *config, "--room", room)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "0 problem(s)" in check.stdout


async def test_an_admin_exports_a_line_conversation_from_the_bot_by_its_line_user_id(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, staff: dict[str, Employee]
) -> None:
    client = new_client(stack, "Kai Export")
    room, _ = await open_portal(stack, employee, client, "please keep this, from LINE")
    admin = staff["admin"]
    dm = await open_dm(admin)
    reply = await command(admin, dm, f"!hl export {client.user_id}", "Exported")
    assert "(html)" in reply  # the default format
    where = Path(reply.split(" to ", 1)[1].split(" on the bridge")[0])
    verified = houseline("export", "verify", str(where))
    assert verified.returncode == 0, verified.stdout
    lines = [json.loads(line) for line in (where / "events.jsonl").read_text().splitlines()]
    assert {line["room_id"] for line in lines} == {room}
    assert {(line["portal"]["network"], line["portal"]["chat_id"]) for line in lines} == {
        ("line", client.user_id)
    }
    said = next(
        line for line in lines if line["event"]["content"].get("body") == "please keep this, from LINE"
    )
    assert said["remote"]["network"] == "line" and said["remote"]["sender_id"] == client.user_id
    page = next(p for p in (where / "html").glob("*.html") if p.name != "index.html")
    assert "please keep this, from LINE" in page.read_text()


async def test_line_retention_uses_lines_period_and_purges_only_what_is_expired_and_not_held(
    stack: DevStack,
    own_bridge: BridgeFactory,
    employee: Employee,
    staff: dict[str, Employee],
    tmp_path: Path,
) -> None:
    """Its own bridge and store (so the purge touches only its portals)."""
    bridge = await own_bridge()
    path = bridge.config_path
    clients: list[LineClient] = []
    rooms: list[str] = []
    try:
        for name in ("Old", "Held"):
            client = new_client(stack, f"{name} Timer")
            room, _ = await open_portal(stack, employee, client, f"{name} conversation on LINE")
            clients.append(client)
            rooms.append(room)
        admin = staff["admin"]
        dm = await open_dm(admin)
        await command(admin, dm, f"!hl hold {clients[1].user_id}", "Legal hold on")
    finally:
        assert await bridge.stop() == 0

    args = ["record", "expired", "-c", str(path)]
    today = houseline(*args)
    assert today.returncode == 0 and "0 conversation(s) past retention" in today.stdout, today.stdout
    # Past Telegram's period but not LINE's: LINE conversations are not Telegram's to judge.
    between = datetime.now(timezone.utc) + timedelta(
        days=(TELEGRAM_RETENTION_DAYS + LINE_RETENTION_DAYS) // 2
    )
    middle = houseline(*args, "--as-of", between.date().isoformat())
    assert "0 conversation(s) past retention" in middle.stdout, middle.stdout
    later = houseline(*args, "--as-of", "2040-01-01")  # beyond LINE's 7 years
    assert (
        "1 conversation(s) past retention" in later.stdout
        and rooms[0] in later.stdout
        and rooms[1] not in later.stdout
    ), later.stdout
    assert f"retention {LINE_RETENTION_DAYS} days" in later.stdout

    hs_admin = await stack.homeserver.register_user(
        f"hsadmin{tmp_path.name[-6:]}".lower().replace("_", ""), "pw-" + tmp_path.name, admin=True
    )
    token_file = tmp_path / "admin-token"
    token_file.write_text(hs_admin.access_token)
    purged = houseline(*args, "--as-of", "2040-01-01", "--purge", "--admin-token-file", str(token_file))
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert f"purged {rooms[0]}" in purged.stdout and rooms[1] not in purged.stdout.split("past retention")[1]

    # "purged" is said once Synapse reports the delete complete: the room is gone; the held one stays.
    async with aiohttp.ClientSession() as http:
        for room, status in ((rooms[0], 404), (rooms[1], 200)):
            async with http.get(
                f"{stack.homeserver.url}/_synapse/admin/v1/rooms/{room}",
                headers={"Authorization": f"Bearer {hs_admin.access_token}"},
            ) as resp:
                assert resp.status == status, (room, await resp.text())
    shown = houseline("audit", "show", "-c", str(path)).stdout
    assert f"record.purge allow [retention] by houseline-cli on {rooms[0]}" in shown
    assert not [line for line in shown.splitlines() if "record.purge" in line and rooms[1] in line]
    again = houseline(*args, "--as-of", "2040-01-01")
    assert "0 conversation(s) past retention" in again.stdout, again.stdout
