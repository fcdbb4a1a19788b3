"""A service report read from the record, end to end: a scripted set of conversations through
the sandbox, the bridge and Synapse, then ``houseline report`` (CSV and HTML) whose figures are
checked against the script. The bridge has a store of its own, so the report sees exactly the
conversations of this test."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bridge.reports.schedule import period_start
from sandbox.employee import Employee
from tests.conftest import ROOT, BridgeFactory
from tests.support import BOT, bot_notice_about, eventually, ghost_of, open_dm

EMPLOYEE = "@employee:localhost"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


async def report(config: Path, since: float, until: float, fmt: str, out: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "report", "-c", str(config),
        "--since", iso(since), "--until", iso(until), "--format", fmt, "-o", str(out),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, output.decode()


async def test_a_scripted_day_reported_from_the_record(
    own_bridge: BridgeFactory, employee: Employee, staff: dict[str, Employee], new_client, tmp_path: Path
) -> None:
    bridge = await own_bridge()
    since = time.time() - 1
    anna, ben = new_client("Anna", "Report"), new_client("Ben", "Report")

    # Anna writes twice and is answered; the time is bounded by what the test saw.
    said = time.time()
    await anna.say("Hello, a question about my account")
    first = await employee.wait_for_message("Hello, a question about my account", sender=ghost_of(anna))
    await anna.say("It is about the fees")
    await employee.wait_for_message("It is about the fees", sender=ghost_of(anna))
    await employee.send_text(first.room_id, "Happy to help with the fees")
    await anna.wait_for_text("Happy to help with the fees")
    bounds = [time.time() - said]

    # Ben writes and waits: his wait is still open when the report ends two hours later, past
    # the policy's 15-minute SLA. A card number to him is denied and is no answer.
    await ben.say("Can someone call me back?")
    ben_msg = await employee.wait_for_message("Can someone call me back?", sender=ghost_of(ben))
    card = await employee.send_text(ben_msg.room_id, "Your card 4111 1111 1111 1111 is on file")
    denial = await employee.wait_for_event(bot_notice_about(ben_msg.room_id, card), 30, "the denial")
    assert "sharing.card_numbers" in denial.content["body"]

    # Anna's second wait.
    said = time.time()
    await anna.say("One more thing")
    await employee.wait_for_message("One more thing", sender=ghost_of(anna))
    await employee.send_text(first.room_id, "Of course")
    await anna.wait_for_text("Of course")
    bounds.append(time.time() - said)
    until = time.time() + 2 * 3600

    out = tmp_path / "report.csv"
    await report(bridge.config_path, since, until, "csv", out)
    rows = {(r["section"], r["key"]): r for r in csv.DictReader(io.StringIO(out.read_text()))}
    me = rows[("employees", EMPLOYEE)]
    assert (me["conversations"], me["messages_in"], me["messages_out"]) == ("2", "4", "2"), me
    assert me["answered_waits"] == "2" and me["over_sla"] == "1", me
    assert me["denials"] == "sharing.card_numbers=1", me
    assert 0 <= float(me["first_response_median_s"]) <= max(bounds) + 1, (me, bounds)
    total = rows[("total", "total")]
    assert (total["messages_in"], total["messages_out"], total["over_sla"]) == ("4", "2", "1"), total
    assert rows[("teams", "wealth")]["messages_out"] == "2"
    telegram = [r for (section, _), r in rows.items() if section == "accounts"]
    assert len(telegram) == 1 and telegram[0]["key"].startswith("telegram:")
    assert telegram[0]["conversations"] == "2"

    # The same period as one HTML page carries the same figures.
    page = tmp_path / "report.html"
    await report(bridge.config_path, since, until, "html", page)
    html = page.read_text()
    assert f'<tr data-key="{EMPLOYEE}">' in html and 'data-field="messages_in" data-value="4"' in html
    assert "Example Advisers" in html

    # An admin asks the bot: the same page, posted as a file, and a summary line.
    admin = staff["admin"]
    dm = await open_dm(admin)
    await admin.send_text(dm, f"!hl report --since {iso(since)} --until {iso(until)}")
    summary = await admin.wait_for_event(
        lambda e: e.room_id == dm and e.sender == BOT and e.content.get("body", "").startswith("Report "),
        60,
        "the report's summary",
    )
    assert (
        "2 conversation(s), 4 client message(s), 2 answer(s), 1 wait(s) over the SLA, 1 denial(s)"
        in (summary.content["body"])
    )
    posted = await admin.wait_for_event(
        lambda e: e.room_id == dm and e.sender == BOT and e.content.get("msgtype") == "m.file", 30, "the page"
    )
    assert posted.content["info"]["mimetype"] == "text/html" and posted.content["body"].endswith(".html")
    resp = await admin.client.download(posted.content["url"])
    assert 'data-field="messages_in" data-value="4"' in resp.body.decode()
    # An employee who is not an admin may not.
    await employee.send_text(dm_of_employee := await open_dm(employee), "!hl report")
    await employee.wait_for_event(
        lambda e: (
            e.room_id == dm_of_employee
            and e.sender == BOT
            and "only Houseline admins" in e.content.get("body", "")
        ),
        30,
        "the refusal",
    )


def test_periods_start_at_utc_midnight_and_on_mondays() -> None:
    wednesday_noon = int(datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
    assert period_start(wednesday_noon, "daily") == int(
        datetime(2026, 12, 2, tzinfo=timezone.utc).timestamp() * 1000
    )
    monday = int(datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp() * 1000)
    assert period_start(wednesday_noon, "weekly") == monday
    assert period_start(monday, "weekly") == monday


async def test_the_scheduled_report_reaches_the_review_room_once_per_period(
    own_bridge: BridgeFactory, employee: Employee, staff: dict[str, Employee], new_client
) -> None:
    bridge = await own_bridge(config=lambda c: c.update(reports={"schedule": "daily"}), clock=True)
    client = new_client("Dora", "Daily")
    await client.say("A question for the daily report")
    await employee.wait_for_message("A question for the daily report", sender=ghost_of(client))
    # The first day the bridge sees end: past midnight on its clock, the report is posted.
    bridge.advance(86_400 - time.time() % 86_400 + 60)
    line = await bridge.wait_for_log("event=report_scheduled schedule=daily", 30)
    assert "since_ms=" in line

    async def review_room() -> str | None:
        with sqlite3.connect(bridge.db_path) as db:
            found = db.execute("SELECT room_id FROM bridge_room WHERE name='review'").fetchall()
        return found[0][0] if found else None

    room = await eventually(review_room, "the review room")
    compliance = staff["compliance"]
    await compliance.join(room)
    posted = await compliance.wait_for_event(
        lambda e: e.room_id == room and e.sender == BOT and e.content.get("msgtype") == "m.file",
        30,
        "the scheduled report",
    )
    assert posted.content["info"]["mimetype"] == "text/html"
    summary = await compliance.wait_for_event(
        lambda e: e.room_id == room and e.sender == BOT and e.content.get("body", "").startswith("Report "),
        30,
        "the report's summary",
    )
    assert "1 conversation(s), 1 client message(s)" in summary.content["body"]
    # Later ticks of the same day post nothing more; a restart does not either.
    assert await bridge.stop() == 0
    bridge = await own_bridge()
    await compliance.send_text(room, "!hl help")
    await compliance.wait_for_event(
        lambda e: (
            e.room_id == room
            and e.sender == BOT
            and "review" in e.content.get("body", "")
            and e.event_id != summary.event_id
            and e.origin_server_ts > summary.origin_server_ts
        ),
        30,
        "the bot answering after the restart",
    )
    assert "event=report_scheduled" not in bridge.output
