"""Continuous archive journaling, end to end: the bridge as a child process against the real
Synapse and the sandbox Telegram, journaling to a real SMTP server (aiosmtpd, in this process)
that can answer 451, drop the connection after taking a message, hold a message unanswered, and
be stopped and started again on the same port.

What must hold: every message event of a portal reaches the archive as the export's EML (same
Message-ID, headers and bytes), nothing is lost across 4xx bursts, drops, an archive restart or
a SIGKILL of the bridge, a message sent twice carries the same Message-ID both times, and
``houseline record journal --check`` finds no gap afterwards (and names one when a receipt goes).
Each test runs its own bridge with its own store and clock file (the journal's due times and
backoff follow the clock, so a test moves it instead of waiting)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import importlib.util
import re
import sqlite3
import ssl
import sys
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
from aiosmtpd.smtp import SMTP, AuthResult

from bench.postgres import find_binaries, start_postgres
from bridge.devstack import DevStack
from bridge.integrations_config import SmtpArchiveConfig
from bridge.journal import SmtpSender, Unreachable
from bridge.record.eml import message_id
from bridge.record.model import ExportRoom
from bridge.store import journal as journal_store
from bridge.store.store import Store
from sandbox.employee import Employee
from sandbox.homeserver import _write_self_signed_cert, free_port
from tests.conftest import ROOT, BridgeFactory, BridgeProcess
from tests.support import bot_notice_about, eventually, ghost_of

JOURNAL = "journal@archive.test"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4 + b"\n%%EOF\n"
SENDER = "houseline@localhost"


# --------------------------------------------------------------------------------------------
# The archive: aiosmtpd with a failure mode


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]

    @property
    def event_id(self) -> str:
        return str(self.message["X-Houseline-Event-Id"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


class Archive:
    """An SMTP journal receiver. ``fail_next``: answer DATA with 451 that many times;
    ``refuse_next``: with 554 (a permanent refusal);
    ``drop_next``: take the message, then cut the connection instead of answering (the sender
    cannot know it arrived); ``hold``: take the message and answer only once released."""

    def __init__(self, *, server_tls: ssl.SSLContext | None = None, **smtp_options: Any) -> None:
        self.port = free_port()
        #: Implicit TLS on the listener; ``smtp_options`` go to aiosmtpd's SMTP (STARTTLS, AUTH).
        self.server_tls = server_tls
        self.smtp_options = smtp_options
        self.received: list[Received] = []
        self.fail_next = 0
        self.refuse_next = 0
        self.drop_next = 0
        self.hold = False
        self.held: list[Received] = []
        self.release = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._sessions: list[SMTP] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._session, "127.0.0.1", self.port, reuse_address=True, ssl=self.server_tls
        )

    def _session(self) -> SMTP:
        session = SMTP(self, hostname="archive.test", **self.smtp_options)
        self._sessions.append(session)
        return session

    async def stop(self) -> None:
        """Down like a restarting server: no listener, every open session cut."""
        if self._server is None:
            return
        self._server.close()
        for session in self._sessions:
            if session.transport is not None:
                session.transport.close()
        self._sessions.clear()
        await self._server.wait_closed()
        self._server = None

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            return "451 4.3.0 Archive busy, try again later"
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return "554 5.7.1 Journal mailbox disabled"
        got = Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
        self.received.append(got)
        if self.drop_next > 0:
            self.drop_next -= 1
            server.transport.close()
            return "250 never heard"
        if self.hold:
            self.held.append(got)
            await self.release.wait()
        return f"250 2.0.0 Ok: queued as J{len(self.received)}"

    def by_event(self) -> dict[str, list[Received]]:
        found: dict[str, list[Received]] = {}
        for got in self.received:
            found.setdefault(got.event_id, []).append(got)
        return found

    async def wait_for(self, event_ids: set[str], timeout: float = 60) -> dict[str, list[Received]]:
        async def arrived() -> dict[str, list[Received]] | None:
            found = self.by_event()
            return found if event_ids <= set(found) else None

        return await eventually(arrived, f"{len(event_ids)} journal message(s) in the archive", timeout)

    def assert_consistent(self) -> None:
        """Each event under one Message-ID, each Message-ID for one event, whatever was resent."""
        ids_of_event: dict[str, set[str]] = {}
        events_of_id: dict[str, set[str]] = {}
        for got in self.received:
            assert got.mail_from == SENDER and got.rcpt_tos == [JOURNAL], (got.mail_from, got.rcpt_tos)
            ids_of_event.setdefault(got.event_id, set()).add(got.message_id)
            events_of_id.setdefault(got.message_id, set()).add(got.event_id)
        assert all(len(v) == 1 for v in ids_of_event.values()), ids_of_event
        assert all(len(v) == 1 for v in events_of_id.values()), events_of_id


@pytest.fixture
async def archive() -> Archive:
    a = Archive()
    await a.start()
    yield a
    a.release.set()
    await a.stop()


# --------------------------------------------------------------------------------------------
# A bridge per test (conftest's own_bridge), journaling to the archive


class JournalBridge(BridgeProcess):
    def query(self, sql: str, *args: Any) -> list[tuple]:
        with sqlite3.connect(self.db_path, timeout=10) as db:
            return db.execute(sql, args).fetchall()

    def receipts(self) -> dict[str, tuple[str, str, int]]:
        rows = self.query("SELECT event_id, message_id, response, accepted_at FROM journal_receipt")
        return {e: (m, r, a) for e, m, r, a in rows}

    def queued(self) -> dict[str, int]:
        return dict(self.query("SELECT event_id, attempts FROM journal_queue"))

    async def journaled(self, event_ids: list[str], timeout: float = 60) -> None:
        """Until the archive's receipt of each is in the store (its last copy was accepted)."""

        async def done() -> bool:
            return set(event_ids) <= set(self.receipts())

        await eventually(done, f"receipts for {len(event_ids)} event(s)", timeout)

    def check_log(self) -> None:
        journal_lines = [line for line in self.lines if "event=journal" in line]
        assert not [line for line in journal_lines if "4111" in line], (
            "a message body reached the journal's log lines"
        )


def no_reminders(rules: dict) -> None:
    # These tests move the clock by hours, and the reminders' notices (journaled like every
    # message) would arrive in the middle of what they count.
    rules.pop("sla", None)


@pytest.fixture
def make_bridge(archive: Archive, own_bridge: BridgeFactory):
    """Starts (or restarts: same store, same clock) a bridge journaling to ``archive``;
    keyword arguments go into ``archive.smtp`` of its config."""

    async def start(**smtp: Any) -> JournalBridge:
        def journaling(config: dict) -> None:
            config["archive"] = {
                "smtp": {
                    "host": "127.0.0.1",
                    "port": archive.port,
                    "security": "none",
                    "journal_address": JOURNAL,
                    "sender": SENDER,
                    **smtp,
                }
            }

        return await own_bridge(policy=no_reminders, config=journaling, clock=True, cls=JournalBridge)

    return start


async def houseline(*args: str) -> tuple[int, str]:
    """The CLI as an operator runs it, without blocking this loop (the archive runs on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


async def journal_check(proc: JournalBridge) -> tuple[int, str]:
    return await houseline("record", "journal", "--check", "-c", str(proc.config_path))


async def no_gaps(proc: JournalBridge, timeout: float = 60) -> str:
    """``record journal --check`` exits 0 (everything in the rooms has a receipt)."""
    last: list[str] = []

    async def clean() -> str | None:
        code, out = await journal_check(proc)
        last[:] = [out]
        return out if code == 0 else None

    try:
        return await eventually(clean, "record journal --check to report no gap", timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; it said:\n{last[0] if last else ''}") from None


def expected_id(event_id: str, room_id: str) -> str:
    """The export's Message-ID of the event (scoped by the room's server, 'unknown' for room
    ids that name none, as from room version 12)."""
    return message_id(
        event_id, SimpleNamespace(server=ExportRoom.server.fget(SimpleNamespace(room_id=room_id)))
    )


async def messages_from(employee: Employee, room: str, sender: str, bodies: list[str]) -> list[str]:
    """The event ids of ``bodies`` once the employee has seen them all in ``room``."""
    found = await employee.wait_for(
        lambda: (
            ids
            if len(
                ids := [
                    e.event_id for b in bodies for e in employee.messages(room, sender=sender, body=b)[:1]
                ]
            )
            == len(bodies)
            else None
        ),
        60,
        f"{len(bodies)} messages in {room}",
    )
    return found


def is_edit(room: str) -> Callable[[Any], bool]:
    return lambda e: e.room_id == room and e.content.get("m.relates_to", {}).get("rel_type") == "m.replace"


# --------------------------------------------------------------------------------------------
# The contract


async def test_every_kind_of_message_reaches_the_archive_as_the_exports_eml(
    stack: DevStack,
    make_bridge,
    archive: Archive,
    employee: Employee,
    new_client,
    tmp_path: Path,
) -> None:
    proc = await make_bridge()
    client = new_client("Jo", "Urnal")
    first = await client.say("I'd like to move my pension")
    question = await employee.wait_for_message("I'd like to move my pension", sender=ghost_of(client))
    room = question.room_id
    answer = await employee.send_text(
        room, "Happy to help", **{"m.relates_to": {"m.in_reply_to": {"event_id": question.event_id}}}
    )
    denied = await employee.send_text(room, "pay with 4111 1111 1111 1111")
    notice = await employee.wait_for_event(bot_notice_about(room, denied), 30, "the denial")
    await client.edit(first["message_id"], "I'd like to move my pension to you")
    edit = await employee.wait_for_event(is_edit(room), 30, "the edit")
    await client.say("Grüße aus Köln 👋")
    greeting = await employee.wait_for_message("Grüße aus Köln 👋", room)
    await client.send_file("document", PDF, "Vertrag.pdf", caption="signed", mime_type="application/pdf")
    document = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("msgtype") == "m.file", 30, "the document"
    )

    got = await archive.wait_for(
        {
            question.event_id,
            answer,
            denied,
            notice.event_id,
            edit.event_id,
            greeting.event_id,
            document.event_id,
        }
    )
    mail = {event_id: copies[0].message for event_id, copies in got.items()}
    client_address = f"telegram-{client.user_id}@houseline.invalid"
    employee_address = "employee@localhost.matrix.invalid"

    q = mail[question.event_id]
    assert q["Message-ID"] == expected_id(question.event_id, room)
    assert (
        q["From"].addresses[0].addr_spec == client_address
        and q["From"].addresses[0].display_name == "Jo Urnal (Telegram)"
    )
    assert employee_address in {a.addr_spec for a in q["To"].addresses}
    assert parsedate_to_datetime(q["Date"]).timestamp() == question.origin_server_ts // 1000
    assert q["X-Houseline-Kind"] == "message" and q["X-Houseline-Room"] == room
    assert q["X-Houseline-Remote-Message-Id"] == str(first["message_id"])
    assert "I'd like to move my pension" in q.get_body(("plain",)).get_content()

    a = mail[answer]
    assert a["From"].addresses[0].addr_spec == employee_address
    assert client_address in {x.addr_spec for x in a["To"].addresses}
    assert a["In-Reply-To"] == a["References"] == q["Message-ID"]
    assert a["X-Houseline-Kind"] == "message"

    # The employee's message waited for the bridge's verdict: its EML says it was refused.
    d = mail[denied]
    assert d["X-Houseline-Kind"] == "denied" and d["X-Houseline-Denied-Rule"] == "sharing.card_numbers"
    assert "NOT SENT to the client" in d.get_body(("plain",)).get_content()
    n = mail[notice.event_id]
    assert n["From"].addresses[0].username == "houseline" and n["X-Houseline-Kind"] == "notice"
    assert n["In-Reply-To"] == d["Message-ID"]

    e = mail[edit.event_id]
    assert e["X-Houseline-Kind"] == "edit" and e["X-Houseline-Edit-Of"] == question.event_id
    assert e["In-Reply-To"] == q["Message-ID"]
    assert "I'd like to move my pension to you" in e.get_body(("plain",)).get_content()

    # Not ASCII (sent as 8BITMIME), and a file as the export attaches it.
    assert mail[greeting.event_id].get_body(("plain",)).get_content().strip() == "Grüße aus Köln 👋"
    [attachment] = list(mail[document.event_id].iter_attachments())
    assert attachment.get_filename() == "Vertrag.pdf" and attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == PDF

    # The bot's disclaimer went too, and nothing went twice.
    out = await no_gaps(proc)
    assert "0 queued, 0 missing" in out, out
    bodies = [
        r.message.get_body(("plain",)).get_content()
        for r in archive.received
        if r.message["X-Houseline-Room"] == room
    ]
    assert any("recorded for regulatory purposes" in b for b in bodies)
    assert all(len(copies) == 1 for copies in archive.by_event().values())
    archive.assert_consistent()
    receipts = proc.receipts()
    assert receipts[answer][0] == a["Message-ID"] and receipts[answer][1].startswith(
        "250 2.0.0 Ok: queued as J"
    )

    # The same EML as the export: messages nothing happened to later are identical bytes; the
    # others (edited, refused later) differ only in what the export adds about their later life.
    code, text = await houseline(
        "export", "-c", str(proc.config_path), "--room", room, "--format", "eml", "-o", str(tmp_path / "eml")
    )
    assert code == 0, text
    exported = {}
    for path in (tmp_path / "eml").rglob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        exported[str(msg["X-Houseline-Event-Id"])] = (path.read_bytes(), msg)
    assert set(exported) == {
        event_id for event_id in archive.by_event() if mail_room(archive, event_id) == room
    }
    for event_id, copies in archive.by_event().items():
        if event_id not in exported:
            continue
        data, msg = exported[event_id]
        for header in (
            "Message-ID",
            "From",
            "Date",
            "Subject",
            "In-Reply-To",
            "X-Houseline-Kind",
            "X-Houseline-Sender",
        ):
            assert copies[0].message[header] == msg[header], (event_id, header)
    assert exported[answer][0] == got[answer][0].data
    assert exported[notice.event_id][0] == got[notice.event_id][0].data

    # A receipt gone is a gap, named with its room; the exit status says so.
    proc.query("DELETE FROM journal_receipt WHERE event_id=?", answer)
    code, out = await journal_check(proc)
    assert code == 1, out
    assert f"{answer} missing" in out and room in out and "1 missing" in out, out


async def test_journal_tables_behave_alike_on_sqlite_and_postgresql(tmp_path: Path) -> None:
    """The queue's and receipts' queries (bridge.store.journal) on both stores."""
    await _exercise_store(f"sqlite:{tmp_path / 'journal.db'}")
    if find_binaries() is None or importlib.util.find_spec("asyncpg") is None:
        pytest.skip(
            "PostgreSQL (apt-get install postgresql) or asyncpg (pip install -e '.[postgres]') not installed"
        )
    cluster = await start_postgres({"bridge": False})
    try:
        await _exercise_store(cluster.url("bridge"))
    finally:
        await cluster.stop()


async def _exercise_store(url: str) -> None:
    store = Store(url)
    await store.start()
    try:
        db = store.db
        await journal_store.enqueue(db, [("$a", "!r"), ("$b", "!r")], 100)
        await journal_store.enqueue(db, [("$a", "!r")], 999)  # already queued: keeps its due time
        assert [
            (r.event_id, r.due_at) for r in await journal_store.due(db, 150, verdict_wait_ms=1000, limit=10)
        ] == [("$a", 100), ("$b", 100)]
        # An employee's message still in the outbox waits for its verdict, but not forever.
        await store.outbox_add([{"event_id": "$b", "room_id": "!r"}])
        rows = await journal_store.due(db, 150, verdict_wait_ms=1000, limit=10)
        assert [r.event_id for r in rows] == ["$a"]
        assert [r.event_id for r in await journal_store.due(db, 2000, verdict_wait_ms=1000, limit=10)] == [
            "$a",
            "$b",
        ]
        await journal_store.accepted(db, rows[0], "<a@x>", 160, "250 ok")
        await journal_store.accepted(
            db, rows[0], "<a@x>", 170, "250 again"
        )  # sent twice: the first receipt stays
        await journal_store.enqueue(db, [("$a", "!r")], 100)  # a resent transaction: not queued again
        assert await journal_store.queue_size(db) == 1
        b = (await journal_store.queued(db, "!r"))["$b"]
        await journal_store.retry(db, b, 5000, "451 later")
        b = (await journal_store.queued(db, "!r"))["$b"]
        assert (b.attempts, b.due_at, b.last_error) == (1, 5000, "451 later")
        receipt = (await journal_store.receipts(db, "!r"))["$a"]
        assert (receipt.message_id, receipt.accepted_at, receipt.response) == ("<a@x>", 160, "250 ok")
        await store.put_ghost("@telegram_1:l", "telegram", "1", "D")
        assert await journal_store.client_identities(db, ["@telegram_1:l", "@x:l"]) == {
            "@telegram_1:l": "telegram-1"
        }
    finally:
        await store.stop()


@pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning"
)  # the implicit-TLS archive is TLS
async def test_smtp_sessions_use_starttls_implicit_tls_and_auth_as_configured(tmp_path: Path) -> None:
    """The SMTP side alone: STARTTLS and implicit TLS with AUTH reach the archive; a server
    that offers no STARTTLS, or refuses the credentials, is a configuration error (nothing is
    sent in clear text), reported as such."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    _write_self_signed_cert(cert, key, "127.0.0.1")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    trust = ssl.create_default_context(cafile=str(cert))

    def accounts(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (auth_data.login, auth_data.password) == (b"journal", b"s3cret-archive-password")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def config(port: int, security: str, password: str = "s3cret-archive-password") -> SmtpArchiveConfig:
        return SmtpArchiveConfig("127.0.0.1", port, security, "journal", password, JOURNAL, SENDER)

    data = b"Message-ID: <x@test>\r\nFrom: a@b\r\nSubject: t\r\n\r\nhello\r\n"
    starttls = Archive(
        tls_context=server_tls, require_starttls=True, auth_required=True, authenticator=accounts
    )
    # aiosmtpd cannot tell an implicit-TLS session from a plain one: it offers AUTH only when told.
    implicit = Archive(
        server_tls=server_tls, auth_required=True, auth_require_tls=False, authenticator=accounts
    )
    plain = Archive()
    for archive in (starttls, implicit, plain):
        await archive.start()
    try:
        for archive, security in ((starttls, "starttls"), (implicit, "tls")):
            sender = SmtpSender(config(archive.port, security), ssl_context=trust)
            answer = await asyncio.to_thread(sender.send, data)
            assert answer.startswith("250 2.0.0 Ok"), answer
            assert [(r.mail_from, r.rcpt_tos, r.data) for r in archive.received] == [
                (SENDER, [JOURNAL], data)
            ]
            await asyncio.to_thread(sender.close)

        with pytest.raises(Unreachable) as refused:
            await asyncio.to_thread(
                SmtpSender(config(starttls.port, "starttls", "wrong-password-here"), ssl_context=trust).send,
                data,
            )
        assert refused.value.permanent and "AUTH refused (535)" in refused.value.reason
        with pytest.raises(Unreachable) as clear:
            await asyncio.to_thread(SmtpSender(config(plain.port, "starttls"), ssl_context=trust).send, data)
        assert clear.value.permanent and "no STARTTLS" in clear.value.reason
        with pytest.raises(
            Unreachable
        ) as untrusted:  # the system's trust store: a self-signed archive is refused
            await asyncio.to_thread(SmtpSender(config(implicit.port, "tls")).send, data)
        assert not plain.received and len(implicit.received) == 1, untrusted.value.reason
    finally:
        for archive in (starttls, implicit, plain):
            await archive.stop()


def mail_room(archive: Archive, event_id: str) -> str:
    return str(archive.by_event()[event_id][0].message["X-Houseline-Room"])


async def test_4xx_bursts_drops_and_an_archive_restart_lose_nothing(
    stack: DevStack,
    make_bridge,
    archive: Archive,
    employee: Employee,
    new_client,
) -> None:
    proc = await make_bridge()
    client = new_client("Fay", "Ult")
    await client.say("hello")
    hello = await employee.wait_for_message("hello", sender=ghost_of(client))
    room = hello.room_id
    await archive.wait_for({hello.event_id})

    # A burst of 451s: each refused message is retried shortly, none is lost.
    archive.fail_next = 5
    burst = [f"burst {i}" for i in range(10)]
    for text in burst:
        await client.say(text)
    ids = await messages_from(employee, room, ghost_of(client), burst)
    await archive.wait_for(set(ids))
    assert archive.fail_next == 0
    await proc.wait_for_log("event=journal_retry", 5)
    assert "code=451" in proc.output

    # Drops after the archive took the message: the bridge cannot know, so it sends again,
    # under the same Message-ID.
    before = len(archive.received)
    archive.drop_next = 3
    dropped = [f"drop {i}" for i in range(5)]
    for text in dropped:
        await client.say(text)
    ids = await messages_from(employee, room, ghost_of(client), dropped)
    await proc.journaled(ids)
    found = archive.by_event()
    assert archive.drop_next == 0
    new, earlier = archive.received[before:], {r.event_id for r in archive.received[:before]}
    assert len(new) == len({r.event_id for r in new} - earlier) + 3  # one extra copy per drop
    assert sum(len(found[i]) - 1 for i in ids) >= 1
    archive.assert_consistent()

    # The archive goes away and comes back on the same port: what was written meanwhile waits
    # in the queue (the bridge's backoff follows its clock; moving it skips the wait).
    await archive.stop()
    down = [f"while down {i}" for i in range(5)]
    for text in down:
        await client.say(text)
    ids = await messages_from(employee, room, ghost_of(client), down)
    await proc.wait_for_log("event=journal_smtp_unreachable", 30)

    # The employee can see a message before the homeserver's transaction carrying it reached
    # the bridge (which queues it for the journal): wait for the queue, not the first failure.
    async def all_queued() -> bool:
        return set(ids) <= set(proc.queued()) | set(proc.receipts())

    await eventually(all_queued, "the messages written while the archive was down in the queue", 30)
    await archive.start()
    proc.advance(600)
    await archive.wait_for(set(ids))

    # A permanent refusal is reported and kept: retried rarely, sent once the archive is fixed.
    archive.refuse_next = 1
    await client.say("refused once")
    [refused] = await messages_from(employee, room, ghost_of(client), ["refused once"])
    await proc.wait_for_log(f"event=journal_refused room={room} event_id={refused}", 30)
    assert proc.queued().get(refused) == 1
    code, out = await journal_check(proc)
    assert (
        code == 1
        and f"{refused} queued (attempts 1, last error: DATA 554 5.7.1 Journal mailbox disabled)" in out
    ), out
    proc.advance(3600)
    await proc.journaled([refused])

    # The hour the clock moved also fired the room's reminders: their notices are journaled too,
    # a moment later; the queue drains once they are.
    async def drained() -> bool:
        return proc.queued() == {}

    await eventually(drained, "the journal queue to drain")
    out = await no_gaps(proc)
    assert "0 queued, 0 missing" in out, out
    archive.assert_consistent()
    assert set(proc.receipts()) <= set(archive.by_event())


async def test_a_bridge_killed_mid_journal_loses_nothing_and_resends_with_the_same_message_id(
    stack: DevStack,
    make_bridge,
    archive: Archive,
    employee: Employee,
    new_client,
) -> None:
    proc = await make_bridge()
    client = new_client("Kil", "Led")
    await client.say("before")
    before = await employee.wait_for_message("before", sender=ghost_of(client))
    room = before.room_id
    await archive.wait_for({before.event_id})

    # The archive takes the next message and does not answer; the bridge dies meanwhile.
    archive.hold = True
    texts = [f"in flight {i}" for i in range(3)]
    for text in texts:
        await client.say(text)
    ids = await messages_from(employee, room, ghost_of(client), texts)
    await eventually(lambda: _true(archive.held), "a message held by the archive")
    held = archive.held[0]
    await proc.kill()
    assert held.event_id not in proc.receipts()
    archive.hold = False
    archive.release.set()

    restarted = await make_bridge()
    found = await archive.wait_for(set(ids) | {held.event_id})
    await eventually(
        lambda: _true(len(archive.by_event()[held.event_id]) >= 2), "the unanswered message sent again"
    )
    copies = found[held.event_id]
    assert len({c.message_id for c in copies}) == 1 and copies[0].message_id == expected_id(
        held.event_id, room
    )
    out = await no_gaps(restarted)
    assert "0 queued, 0 missing" in out, out
    archive.assert_consistent()


async def _true(value: Any) -> Any:
    return value


async def test_journal_throughput(
    stack: DevStack, make_bridge, archive: Archive, employee: Employee, new_client
) -> None:
    """100 client messages queued behind a one-hour delay, then the clock moved past it: how
    fast the journal empties its queue into a healthy archive."""
    proc = await make_bridge(delay_seconds=3600)
    client = new_client("Through", "Put")
    texts = [f"message {i}" for i in range(100)]
    for text in texts:
        await client.say(text)
    ids = await messages_from(employee, None, ghost_of(client), texts)
    await eventually(lambda: _true(set(ids) <= set(proc.queued())), "100 messages queued for the journal", 60)
    assert not archive.received
    queued = set(proc.queued())

    t0 = time.monotonic()
    proc.advance(3600)
    await archive.wait_for(queued, 120)
    elapsed = time.monotonic() - t0
    accepted = sorted(proc.receipts()[e][2] for e in queued)
    span = (accepted[-1] - accepted[0]) / 1000
    print(
        f"journal throughput: {len(queued)} messages journaled in {elapsed:.2f}s after the delay passed "
        f"({len(queued) / elapsed:.1f} msg/s including up to 1s until the worker's next look; "
        f"{(len(queued) - 1) / span if span else float('inf'):.1f} msg/s between the first and the last receipt)"
    )
    # Nothing missing; what the moved clock set off meanwhile (reminders) waits out its delay.
    code, out = await journal_check(proc)
    counts = re.search(r"(\d+) journaled, (\d+) queued, (\d+) missing", out)
    assert counts and int(counts[1]) >= len(queued) and int(counts[3]) == 0, out
    archive.assert_consistent()
