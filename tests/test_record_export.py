"""Compliance exports: the record is complete and unchanged, each format tells the same story
(edits, deletions, refusals, replies, media), the HTML is safe to open, and verify_export names
exactly what was tampered with."""

from __future__ import annotations

import email.policy
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, parseaddr
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.record import (
    ExportEvent,
    ExportRoom,
    MediaFile,
    verify_export,
    write_export,
)
from bridge.record.html import sanitise
from bridge.record.jsonl import canonical_json
from bridge.record.model import safe_file_name

GENERATED_AT = datetime(2024, 5, 2, 9, 0, tzinfo=timezone.utc)
SCOPE = {
    "requested_by": "@compliance:company.test",
    "portals": ["!portal:company.test"],
    "reason": "FINRA request 42",
}
T0 = 1714557600000  # 2024-05-01 10:00:00 UTC

ROOM_ID = "!portal:company.test"
DANA = "@telegram_12345:company.test"
BOT = "@houseline:company.test"
ALICE = "@alice:company.test"
BOB = "@bob:company.test"
REMOTE = {"network": "telegram", "account": "acct1", "chat_id": "12345", "sender_id": "12345"}

IMAGE = MediaFile(
    "mxc://company.test/img1", "ausweis.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3
)
PDF = MediaFile(
    "mxc://company.test/file1",
    "Vertrag Müller.pdf",
    "application/pdf",
    b"%PDF-1.4\n" + bytes(range(255, -1, -1)),
)
DELETED_AT = T0 + 20 * 60_000
SCRIPT = "<script>alert('pwned')</script>"


def ev(
    event_id: str,
    sender: str,
    minute: float,
    content: dict[str, Any],
    type: str = "m.room.message",
    **extra: Any,
) -> ExportEvent:
    return ExportEvent(
        {
            "type": type,
            "event_id": event_id,
            "sender": sender,
            "room_id": ROOM_ID,
            "origin_server_ts": T0 + int(minute * 60_000),
            "content": content,
            "unsigned": {"age": 1234},
            **extra,
        }
    )


def remote(message_id: str) -> dict[str, str]:
    return {**REMOTE, "message_id": message_id}


def member(
    event_id: str, user: str, minute: float, membership: str, sender: str | None = None
) -> ExportEvent:
    return ev(event_id, sender or user, minute, {"membership": membership}, "m.room.member", state_key=user)


def build_room() -> ExportRoom:
    events = (
        ev("$create", ALICE, 0, {"creator": ALICE, "room_version": "10"}, "m.room.create", state_key=""),
        member("$join-alice", ALICE, 0.1, "join"),
        member("$join-dana", DANA, 0.2, "join"),
        member("$join-bob", BOB, 0.3, "join"),
        ev(
            "$disclaimer",
            BOT,
            0.5,
            {"msgtype": "m.notice", "body": "Disclaimer: this conversation is recorded."},
        ),
        ev(
            "$hello",
            DANA,
            1,
            {
                "msgtype": "m.text",
                "body": "Hallo! Grüße 👋 — können Sie mir helfen?",
                "net.houseline.remote": remote("101"),
            },
        ),
        ev(
            "$fmt",
            ALICE,
            2,
            {
                "msgtype": "m.text",
                "body": f"Sure {SCRIPT} **bold**",
                "format": "org.matrix.custom.html",
                "formatted_body": f'<b>Sure</b> {SCRIPT}<img src=x onerror=alert(1)><a href="javascript:alert(1)">click</a> '
                '<a href="https://example.com/">site</a><mx-reply>fallback</mx-reply>',
            },
        ),
        ev("$plain-script", ALICE, 2.5, {"msgtype": "m.text", "body": f"Do not run {SCRIPT} please"}),
        ev(
            "$reply",
            DANA,
            3,
            {
                "msgtype": "m.text",
                "body": "Danke! 🙏",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$fmt"}},
                "net.houseline.remote": remote("102"),
            },
        ),
        ev(
            "$edit1",
            DANA,
            4,
            {
                "msgtype": "m.text",
                "body": "* Hallo! Können Sie helfen? (v2)",
                "m.new_content": {"msgtype": "m.text", "body": "Hallo! Können Sie helfen? (v2)"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$hello"},
                "net.houseline.remote": remote("101"),
            },
        ),
        ev(
            "$edit2",
            DANA,
            5,
            {
                "msgtype": "m.text",
                "body": "* Hallo! Können Sie bitte helfen? (v3)",
                "m.new_content": {"msgtype": "m.text", "body": "Hallo! Können Sie bitte helfen? (v3)"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$hello"},
                "net.houseline.remote": remote("101"),
            },
        ),
        ev(
            "$img",
            DANA,
            6,
            {
                "msgtype": "m.image",
                "body": "Mein Ausweis 🪪",
                "filename": "ausweis.jpg",
                "url": IMAGE.mxc,
                "info": {"mimetype": "image/jpeg", "size": len(IMAGE.data)},
                "net.houseline.remote": remote("103"),
            },
        ),
        ev(
            "$file",
            ALICE,
            7,
            {
                "msgtype": "m.file",
                "body": PDF.file_name,
                "filename": PDF.file_name,
                "url": PDF.mxc,
                "info": {"mimetype": "application/pdf", "size": len(PDF.data)},
            },
        ),
        ev(
            "$react",
            DANA,
            8,
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$file", "key": "👍"}},
            "m.reaction",
        ),
        ev(
            "$todelete",
            DANA,
            9,
            {"msgtype": "m.text", "body": "Meine Kontonummer ist 123", "net.houseline.remote": remote("104")},
        ),
        ev(
            "$delnotice",
            BOT,
            20,
            {
                "msgtype": "m.notice",
                "body": "Dana Client (Telegram) deleted this message on Telegram (2024-05-01 10:20 UTC). It stays here as part of the record.",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$todelete"}},
                "net.houseline.client_deleted": {"event_id": "$todelete", "ts": DELETED_AT},
                "net.houseline.remote": remote("104"),
            },
        ),
        ev("$denied", ALICE, 21, {"msgtype": "m.text", "body": "Card 4111 1111 1111 1111"}),
        ev(
            "$denynotice",
            BOT,
            21.1,
            {
                "msgtype": "m.notice",
                "body": "This message contains a card number ending 1111 (rule sharing.card_numbers) Nothing was sent to the client; the message stays here as part of the record.",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$denied"}},
            },
        ),
        ev(
            "$redacted",
            BOB,
            22,
            {},
            unsigned={
                "redacted_because": {
                    "type": "m.room.redaction",
                    "event_id": "$redaction",
                    "sender": ALICE,
                    "origin_server_ts": T0 + 23 * 60_000,
                    "content": {"reason": "wrong chat"},
                    "redacts": "$redacted",
                }
            },
        ),
        member("$leave-bob", BOB, 24, "leave"),
    )
    return ExportRoom(
        room_id=ROOM_ID,
        name="Dana Client (Telegram)",
        network="telegram",
        account="acct1",
        chat_id="12345",
        participants={DANA: "Dana Client (Telegram)", BOT: "Houseline", ALICE: "Alice Ärger", BOB: "Bob"},
        clients=frozenset({DANA}),
        bot=BOT,
        events=events,
        media={IMAGE.mxc: IMAGE, PDF.mxc: PDF},
    )


ROOM = build_room()
MESSAGES = [e for e in ROOM.events if e.type == "m.room.message"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One pristine export per format; tests that tamper copy it first."""
    made = {}
    for fmt in ("jsonl", "eml", "html"):
        out = tmp_path_factory.mktemp("export") / fmt
        write_export([ROOM], out, fmt, generated_at=GENERATED_AT, scope=SCOPE)
        made[fmt] = out
    return made


def lines_of(out: Path) -> list[bytes]:
    return (out / "events.jsonl").read_bytes().split(b"\n")[:-1]


def media_path_of(out: Path, event_id: str) -> str:
    records = [json.loads(line) for line in lines_of(out)]
    return next(r["media_file"] for r in records if r["event"]["event_id"] == event_id)


# --------------------------------------------------------------------------------------------
# JSONL: the record


@pytest.mark.parametrize("fmt", ["jsonl", "eml", "html"])
def test_every_export_holds_every_event_unchanged(exports: dict[str, Path], fmt: str) -> None:
    out = exports[fmt]
    lines = lines_of(out)
    assert (out / "events.jsonl").read_bytes().endswith(b"\n")
    assert len(lines) == len(ROOM.events)
    for line, event in zip(lines, ROOM.events):
        record = json.loads(line)
        assert record["event"] == event.event
        assert record["room_id"] == ROOM_ID
        assert record["portal"] == {
            "name": ROOM.name,
            "network": "telegram",
            "account": "acct1",
            "chat_id": "12345",
        }
        assert record["remote"] == event.event["content"].get("net.houseline.remote")
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert "Grüße 👋".encode() in b"\n".join(lines)  # raw UTF-8, not \u escapes


def test_jsonl_export_has_only_the_record_media_and_manifest(exports: dict[str, Path]) -> None:
    out = exports["jsonl"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    image, pdf = media_path_of(out, "$img"), media_path_of(out, "$file")
    assert files == sorted(["events.jsonl", "manifest.json", image, pdf])
    assert (out / image).read_bytes() == IMAGE.data
    assert (out / pdf).read_bytes() == PDF.data
    assert image.startswith("media/dana-client-telegram-") and image.endswith("-ausweis.jpg")
    assert pdf.endswith("file-Vertrag Müller.pdf")


def test_manifest_shape(exports: dict[str, Path]) -> None:
    out = exports["html"]
    doc = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert doc["houseline_export"] == 1 and doc["format"] == "html"
    assert doc["generated_at"] == "2024-05-02T09:00:00+00:00"
    assert doc["scope"] == SCOPE
    assert doc["rooms"] == [{"room_id": ROOM_ID, "name": ROOM.name, "events": len(ROOM.events)}]
    paths = [f["path"] for f in doc["files"]]
    assert paths == sorted(paths) and "manifest.json" not in paths
    assert {"events.jsonl", "html/index.html"} <= set(paths)
    events = doc["events"]
    assert events["count"] == len(ROOM.events) == len(events["event_ids"]) == len(events["event_hashes"])
    assert events["event_ids"] == [e.event_id for e in ROOM.events]
    assert events["algorithm"].startswith("sha256-chain-v1")
    import hashlib

    chain = "0" * 64
    for line in lines_of(out):
        chain = hashlib.sha256(chain.encode("ascii") + line).hexdigest()
    assert events["chain"] == chain


def test_exports_are_reproducible(tmp_path: Path, exports: dict[str, Path]) -> None:
    """Same events, same bytes: a re-export can be compared with the original by hash."""
    for fmt, original in exports.items():
        again = write_export([ROOM], tmp_path / fmt, fmt, generated_at=GENERATED_AT, scope=SCOPE)
        assert (tmp_path / fmt / "manifest.json").read_bytes() == (original / "manifest.json").read_bytes()
        assert again.chain == json.loads((original / "manifest.json").read_text())["events"]["chain"]


def test_write_export_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        write_export([ROOM], tmp_path / "a", "pdf", generated_at=GENERATED_AT, scope={})
    with pytest.raises(ValueError, match="timezone-aware"):
        write_export([ROOM], tmp_path / "b", "jsonl", generated_at=datetime(2024, 5, 2), scope={})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "old.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_export([ROOM], tmp_path / "c", "jsonl", generated_at=GENERATED_AT, scope={})


def test_file_names_are_sanitised() -> None:
    for nasty in [
        "../../etc/passwd",
        "..\\..\\boot.ini",
        ".bashrc",
        "a\x00b\nc.txt",
        "x" * 300 + ".pdf",
        "",
        "...",
    ]:
        name = safe_file_name(nasty)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert name and len(name) <= 100 and all(ord(c) >= 32 for c in name)
    assert safe_file_name("x" * 300 + ".pdf").endswith(".pdf")
    assert safe_file_name("Vertrag Müller.pdf") == "Vertrag Müller.pdf"


def test_record_modules_stay_off_the_network() -> None:
    """The writers get fetched data; importing them must not pull in a client library."""
    code = (
        "import sys, bridge.record, bridge.record.formats, bridge.record.eml, bridge.record.html;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'mautrix', 'aiohttp', 'nio', 'requests'}"
        " or m in {'urllib.request', 'http.client', 'ssl'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_held_messages_and_foreign_edits(tmp_path: Path) -> None:
    """A hold is not a final refusal, and an edit by someone else is not applied."""
    events = (
        ev("$held", BOB, 1, {"msgtype": "m.text", "body": "Offer attached"}),
        ev(
            "$holdnotice",
            BOT,
            1.1,
            {
                "msgtype": "m.notice",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$held"}},
                "body": "Juniors may not write to clients alone (rule join.senior_role) Nothing was sent to the client yet.",
            },
        ),
        ev(
            "$foreign-edit",
            ALICE,
            2,
            {
                "msgtype": "m.text",
                "body": "* changed",
                "m.new_content": {"msgtype": "m.text", "body": "changed"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$held"},
            },
        ),
    )
    room = ExportRoom(**{**ROOM.__dict__, "events": events, "media": {}})
    write_export([room], tmp_path / "eml", "eml", generated_at=GENERATED_AT, scope={})
    write_export([room], tmp_path / "html", "html", generated_at=GENERATED_AT, scope={})
    emls = parse_emls(tmp_path / "eml")
    assert str(emls["$held"]["X-Houseline-Kind"]) == "held"
    assert "HELD, not sent to the client when written — rule join.senior_role" in body_of(emls["$held"])
    assert emls["$held"]["X-Houseline-Edits"] is None
    page, _ = parse_page(
        next(p for p in (tmp_path / "html" / "html").glob("*.html") if p.name != "index.html")
    )
    assert "HELD — join.senior_role" in page.all_text and "NOT SENT" not in page.all_text
    assert "claims to edit $held, a message by someone else; Matrix does not apply it" in page.all_text


# --------------------------------------------------------------------------------------------
# EML


def parse_emls(out: Path) -> dict[str, EmailMessage]:
    files = sorted((out / "eml").rglob("*.eml"))
    parsed = {}
    for path in files:
        data = path.read_bytes()
        assert b"\n" not in data.replace(b"\r\n", b""), f"{path} has bare LF line ends"
        msg = BytesParser(policy=email.policy.default).parsebytes(data)
        assert not msg.defects, (path, msg.defects)
        parsed[str(msg["X-Houseline-Event-Id"])] = msg
    assert [p.name for p in files] == [f"{n:06d}.eml" for n in range(1, len(files) + 1)]
    return parsed


def body_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()


def test_eml_one_message_per_message_event(exports: dict[str, Path]) -> None:
    emls = parse_emls(exports["eml"])
    assert list(emls) == [e.event_id for e in MESSAGES]
    kinds = {event_id: str(msg["X-Houseline-Kind"]) for event_id, msg in emls.items()}
    assert kinds == {
        "$disclaimer": "notice",
        "$hello": "message",
        "$fmt": "message",
        "$plain-script": "message",
        "$reply": "message",
        "$edit1": "edit",
        "$edit2": "edit",
        "$img": "message",
        "$file": "message",
        "$todelete": "message",
        "$delnotice": "client-deleted",
        "$denied": "denied",
        "$denynotice": "notice",
        "$redacted": "redacted",
    }


def test_eml_headers(exports: dict[str, Path]) -> None:
    msg = parse_emls(exports["eml"])["$hello"]
    assert parseaddr(str(msg["From"])) == ("Dana Client (Telegram)", "telegram-12345@houseline.invalid")
    recipients = {addr for _, addr in (parseaddr(a.strip()) for a in str(msg["To"]).split(","))}
    assert recipients == {
        "alice@company.test.matrix.invalid",
        "bob@company.test.matrix.invalid",
        "houseline@company.test.matrix.invalid",
    }
    to_dana = parseaddr(str(parse_emls(exports["eml"])["$fmt"]["To"]).split(",")[0])
    assert to_dana == (
        "Dana Client (Telegram)",
        "telegram-12345@houseline.invalid",
    )  # same identity as in From
    assert "Ärger" in str(msg["To"])
    assert str(msg["Date"]) == format_datetime(datetime(2024, 5, 1, 10, 1, tzinfo=timezone.utc))
    assert msg["Date"].datetime == datetime(2024, 5, 1, 10, 1, tzinfo=timezone.utc)
    assert str(msg["Message-ID"]) == "<$hello@company.test>"
    assert str(msg["Subject"]) == "Dana Client (Telegram): Hallo! Grüße 👋 — können Sie mir helfen?"
    assert str(msg["X-Houseline-Room"]) == ROOM_ID
    assert str(msg["X-Houseline-Network"]) == "telegram"
    assert str(msg["X-Houseline-Remote-Message-Id"]) == "101"
    assert str(msg["X-Houseline-Edits"]) == "2"
    assert "Grüße 👋" in body_of(msg)
    alice = parse_emls(exports["eml"])["$file"]
    assert parseaddr(str(alice["From"])) == ("Alice Ärger", "alice@company.test.matrix.invalid")
    assert alice["X-Houseline-Remote-Message-Id"] is None
    assert len(str(parse_emls(exports["eml"])["$denied"]["Subject"])) <= len(ROOM.name) + 2 + 60


def test_eml_threading_for_replies_and_edits(exports: dict[str, Path]) -> None:
    emls = parse_emls(exports["eml"])
    reply = emls["$reply"]
    assert str(reply["In-Reply-To"]) == str(emls["$fmt"]["Message-ID"])
    assert str(emls["$fmt"]["Message-ID"]) in str(reply["References"])
    assert "Danke! 🙏" in body_of(reply) and "In reply to Alice Ärger" in body_of(reply)
    for edit_id, text in [("$edit1", "(v2)"), ("$edit2", "(v3)")]:
        edit = emls[edit_id]
        assert str(edit["In-Reply-To"]) == str(emls["$hello"]["Message-ID"])
        assert str(edit["References"]) == str(emls["$hello"]["Message-ID"])
        assert str(edit["X-Houseline-Edit-Of"]) == "$hello"
        assert text in body_of(edit) and text in str(edit["Subject"])
    assert "Grüße" in body_of(emls["$hello"])  # the original version stays as it was


def test_eml_attachments_are_the_media(exports: dict[str, Path]) -> None:
    emls = parse_emls(exports["eml"])
    for event_id, media in [("$img", IMAGE), ("$file", PDF)]:
        attachments = list(emls[event_id].iter_attachments())
        assert len(attachments) == 1
        part = attachments[0]
        assert part.get_filename() == media.file_name
        assert part.get_content_type() == media.mimetype
        assert part.get_payload(decode=True) == media.data
    assert "Mein Ausweis 🪪" in body_of(emls["$img"])
    assert "Reactions: 👍 Dana Client (Telegram)" in body_of(emls["$file"])
    assert "👍" in str(emls["$file"]["X-Houseline-Reactions"])


def test_eml_deletion_denial_and_redaction(exports: dict[str, Path]) -> None:
    emls = parse_emls(exports["eml"])
    original, deletion = emls["$todelete"], emls["$delnotice"]
    assert "Meine Kontonummer ist 123" in body_of(original)
    assert str(original["X-Houseline-Client-Deleted-At"]) == "2024-05-01 10:20:00 UTC"
    assert str(deletion["In-Reply-To"]) == str(original["Message-ID"])
    assert str(deletion["X-Houseline-Deleted-Event-Id"]) == "$todelete"
    assert "2024-05-01 10:20:00 UTC" in body_of(deletion) and "> Meine Kontonummer ist 123" in body_of(
        deletion
    )
    denied = emls["$denied"]
    assert str(denied["X-Houseline-Denied-Rule"]) == "sharing.card_numbers"
    assert "NOT SENT to the client — rule sharing.card_numbers" in body_of(denied)
    assert str(emls["$denynotice"]["In-Reply-To"]) == str(denied["Message-ID"])
    assert (
        "[redacted at 2024-05-01 10:23:00 UTC by Alice Ärger (@alice:company.test): wrong chat]"
        in body_of(emls["$redacted"])
    )


def test_eml_html_alternative_is_sanitised(exports: dict[str, Path]) -> None:
    msg = parse_emls(exports["eml"])["$fmt"]
    html_part = msg.get_body(preferencelist=("html",))
    assert html_part is not None and html_part.get_content_type() == "text/html"
    markup = html_part.get_content()
    assert (
        "<b>Sure</b>" in markup
        and "<script" not in markup.lower()
        and "onerror" not in markup
        and "javascript:" not in markup
    )
    assert SCRIPT in body_of(msg)  # the plain part is the sender's text, as plain text


# --------------------------------------------------------------------------------------------
# HTML


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def parse_page(path: Path) -> tuple[Page, str]:
    raw = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(raw)
    page.close()
    return page, raw


def test_html_pages_are_safe(exports: dict[str, Path]) -> None:
    out = exports["html"]
    pages = sorted((out / "html").glob("*.html"))
    assert len(pages) == 2
    for path in pages:
        page, raw = parse_page(path)
        tags = {tag for tag, _ in page.tags}
        assert not tags & {"script", "iframe", "object", "embed", "link", "form", "base"}
        for tag, attrs in page.tags:
            assert not any(name.startswith("on") for name in attrs), (tag, attrs)
            for name in ("src", "href"):
                value = attrs.get(name) or ""
                assert not value.lower().startswith(("javascript:", "data:", "//"))
                if tag == "img":
                    assert not value.startswith(("http:", "https:")), "no external resources"
        assert "<script" not in raw.lower()


def test_html_transcript_content(exports: dict[str, Path]) -> None:
    out = exports["html"]
    page_path = next(p for p in (out / "html").glob("*.html") if p.name != "index.html")
    page, raw = parse_page(page_path)
    text = page.all_text
    # header
    for expected in ["Dana Client (Telegram)", "telegram", "12345", "Alice Ärger", "2024-05-02 09:00:00 UTC"]:
        assert expected in text
    # the script in a plain message is visible, as text
    assert f"Do not run {SCRIPT} please" in text
    assert "Do not run &lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; please" in raw
    # formatted body sanitised: bold kept, script and its content, handlers and js links gone
    assert "<b>Sure</b>" in raw and "alert('pwned')</script>" not in raw and "fallback" not in text
    assert ("a", {"href": "https://example.com/", "rel": "noopener noreferrer nofollow"}) in page.tags
    # edits: original plus each version with its time
    assert "Hallo! Grüße 👋 — können Sie mir helfen?" in text
    assert "edited at 10:04 UTC: Hallo! Können Sie helfen? (v2)" in text
    assert "edited at 10:05 UTC: Hallo! Können Sie bitte helfen? (v3)" in text
    # reply quote, reactions, deletion, denial, redaction, membership
    assert "In reply to Alice Ärger" in text
    assert "👍 Dana Client (Telegram)" in text
    assert "Meine Kontonummer ist 123" in text and "deleted by the client at 2024-05-01 10:20:00 UTC" in text
    assert "Card 4111 1111 1111 1111" in text and "NOT SENT — sharing.card_numbers" in text
    assert "[redacted at 2024-05-01 10:23:00 UTC by Alice Ärger (@alice:company.test): wrong chat]" in text
    assert "Alice Ärger joined" in text and "Bob left" in text
    assert "Disclaimer: this conversation is recorded." in text
    # the annotations are not shown a second time as messages of their own
    assert text.count("deleted this message on Telegram") == 0
    assert text.count("(rule sharing.card_numbers)") == 1  # only in the denial's explanation


def test_html_media_point_at_exported_files(exports: dict[str, Path]) -> None:
    out = exports["html"]
    page_path = next(p for p in (out / "html").glob("*.html") if p.name != "index.html")
    page, _ = parse_page(page_path)
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 1
    assert (page_path.parent / unquote(images[0] or "")).resolve().read_bytes() == IMAGE.data
    links = [
        attrs["href"]
        for tag, attrs in page.tags
        if tag == "a" and (attrs.get("href") or "").startswith("../media/")
    ]
    assert len(links) == 1 and (page_path.parent / unquote(links[0] or "")).read_bytes() == PDF.data
    assert "Mein Ausweis 🪪" in page.all_text


def test_html_index_links_the_portals(exports: dict[str, Path]) -> None:
    out = exports["html"]
    page, _ = parse_page(out / "html" / "index.html")
    hrefs = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    assert len(hrefs) == 1 and (out / "html" / unquote(hrefs[0] or "")).is_file()
    assert "FINRA request 42" in page.all_text


@pytest.mark.parametrize(
    "markup, forbidden",
    [
        ("<scr<script>ipt>alert(1)</script>", "<script"),
        ("<svg><script>alert(1)</script></svg>", "alert"),
        ('<a href="  JaVa\tScRiPt:alert(1)">x</a>', "javascript"),
        ('<a href="data:text/html,<script>">x</a>', "data:"),
        ('<p style="background:url(http://evil)" onclick="x()">hi</p>', "evil"),
        ("<img src=http://tracker.example/pixel>", "<img"),
        ("<style>body{display:none}</style>ok", "display"),
        ("<b>unclosed <i>nest", "<script"),
        ("&lt;script&gt;", "<script"),
        ("<!-- <script>alert(1)</script> -->", "<script"),
    ],
)
def test_sanitiser_allows_only_the_allow_list(markup: str, forbidden: str) -> None:
    result = sanitise(markup)
    assert forbidden not in result.lower()
    page = Page()
    page.feed(result)
    assert {tag for tag, _ in page.tags} <= {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "del",
        "s",
        "code",
        "pre",
        "blockquote",
        "a",
        "br",
        "p",
        "ul",
        "ol",
        "li",
        "span",
    }


def test_sanitiser_keeps_formatting_balanced() -> None:
    assert sanitise("<b>unclosed <i>nest") == "<b>unclosed <i>nest</i></b>"
    assert sanitise('<span data-mx-spoiler="r">s</span></div>') == '<span data-mx-spoiler="r">s</span>'
    assert sanitise("a<br/>b &amp; <code>x&lt;y</code>") == "a<br>b &amp; <code>x&lt;y</code>"


# --------------------------------------------------------------------------------------------
# Verification


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    out = tmp_path / "export"
    write_export([ROOM], out, "eml", generated_at=GENERATED_AT, scope=SCOPE)
    return out


def write_lines(out: Path, lines: list[bytes]) -> None:
    (out / "events.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def test_verify_intact(fresh: Path) -> None:
    result = verify_export(fresh)
    manifest = json.loads((fresh / "manifest.json").read_text())
    assert result.ok and result.problem is None and result.problems == ()
    assert result.files_checked == len(manifest["files"]) == 1 + 2 + len(MESSAGES)
    assert result.events_checked == len(ROOM.events)
    assert result.chain == manifest["events"]["chain"]
    assert verify_export(fresh, expected_chain=result.chain).ok


def test_verify_names_an_altered_media_file(fresh: Path) -> None:
    path = media_path_of(fresh, "$img")
    data = bytearray((fresh / path).read_bytes())
    data[10] ^= 0x01
    (fresh / path).write_bytes(bytes(data))
    result = verify_export(fresh)
    assert not result.ok and result.problem == f"file {path} was altered (sha256 mismatch)"


def test_verify_names_an_altered_event(fresh: Path) -> None:
    lines = lines_of(fresh)
    index = next(i for i, line in enumerate(lines) if b'"$todelete"' in line and b"Kontonummer" in line)
    lines[index] = lines[index].replace(b"123", b"124")
    write_lines(fresh, lines)
    result = verify_export(fresh)
    assert result.problem == f"event {index + 1} (line {index + 1} of events.jsonl, $todelete) was altered"
    assert "file events.jsonl was altered (sha256 mismatch)" in result.problems


def test_verify_names_a_removed_event(fresh: Path) -> None:
    lines = lines_of(fresh)
    del lines[6]
    write_lines(fresh, lines)
    result = verify_export(fresh)
    n = len(ROOM.events)
    assert result.problem == (
        f"events.jsonl has {n - 1} lines but the manifest records {n}: an event was removed (event 7, {ROOM.events[6].event_id})"
    )


def test_verify_names_reordered_events(fresh: Path) -> None:
    lines = lines_of(fresh)
    lines[11], lines[12] = lines[12], lines[11]
    write_lines(fresh, lines)
    result = verify_export(fresh)
    assert result.problem == (
        f"events out of order at line 12 ({ROOM.events[12].event_id}, recorded at line 13): the chain does not match"
    )


def test_verify_names_an_added_event_and_an_added_file(fresh: Path) -> None:
    lines = lines_of(fresh)
    write_lines(fresh, [*lines[:3], canonical_json({"event": {"event_id": "$forged"}}), *lines[3:]])
    assert "an event was added (line 4, $forged)" in (verify_export(fresh).problem or "")
    write_lines(fresh, lines)
    (fresh / "extra.txt").write_text("not part of the export")
    assert verify_export(fresh).problem == "file extra.txt was added (not in the manifest)"


def test_verify_names_a_missing_eml(fresh: Path) -> None:
    victim = sorted((fresh / "eml").rglob("*.eml"))[2]
    victim.unlink()
    relative = victim.relative_to(fresh).as_posix()
    assert relative.endswith("/000003.eml")
    assert verify_export(fresh).problem == f"file {relative} is missing"


def test_verify_manifest_problems(fresh: Path) -> None:
    manifest = fresh / "manifest.json"
    doc = json.loads(manifest.read_text())
    assert not verify_export(fresh, expected_chain="f" * 64).ok
    doc["events"]["chain"] = "0" * 64
    manifest.write_text(json.dumps(doc))
    assert "the manifest was altered" in (verify_export(fresh).problem or "")
    manifest.write_text("{not json")
    assert (verify_export(fresh).problem or "").startswith("manifest.json is not valid JSON")
    manifest.unlink()
    result = verify_export(fresh)
    assert not result.ok and (result.problem or "").startswith("manifest.json is missing")


# --------------------------------------------------------------------------------------------
# Property: any export verifies, and any single-byte change to the record is caught

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_event = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["m.room.message", "m.reaction", "m.room.member", "m.room.topic"]),
        "sender": st.sampled_from([DANA, ALICE, BOT, "@stranger:elsewhere.test"]),
        "origin_server_ts": st.integers(min_value=0, max_value=4_102_444_800_000),
        "content": st.fixed_dictionaries(
            {"body": _text},
            optional={
                "msgtype": st.sampled_from(["m.text", "m.notice", "m.emote"]),
                "formatted_body": _text,
                "format": st.just("org.matrix.custom.html"),
                "membership": st.sampled_from(["join", "leave"]),
                "m.relates_to": st.fixed_dictionaries(
                    {
                        "rel_type": st.sampled_from(["m.replace", "m.annotation"]),
                        "event_id": st.just("$e0"),
                        "key": _text,
                    }
                ),
            },
        ),
    }
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(_event, min_size=1, max_size=8),
    fmt=st.sampled_from(["jsonl", "eml", "html"]),
    name=_text,
    data=st.data(),
)
def test_property_export_verifies_and_detects_any_byte_change(
    events: list[dict[str, Any]], fmt: str, name: str, data: st.DataObject
) -> None:
    room = ExportRoom(
        room_id="!r:company.test",
        name=name,
        network="telegram",
        account="a",
        chat_id="1",
        participants={DANA: "Dana", ALICE: name},
        clients=frozenset({DANA}),
        bot=BOT,
        events=tuple(
            ExportEvent({**e, "event_id": f"$e{i}", "room_id": "!r:company.test"})
            for i, e in enumerate(events)
        ),
        media={},
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x"
        write_export([room], out, fmt, generated_at=GENERATED_AT, scope={})
        assert verify_export(out).ok, verify_export(out).problems
        path = out / "events.jsonl"
        raw = bytearray(path.read_bytes())
        position = data.draw(st.integers(0, len(raw) - 1), label="position")
        raw[position] ^= data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(bytes(raw))
        result = verify_export(out)
        assert not result.ok
        assert result.problem is not None and "events.jsonl" in result.problem
