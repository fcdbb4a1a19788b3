"""Service reports: the figures from a scripted set of conversations, exactly; CSV and HTML say
the same; the HTML page renders in headless Chromium (Debian's chromium, which `make test`
installs when it is missing)."""

from __future__ import annotations

import csv
import io
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bridge.reports.model import (
    AuditDenial,
    PortalFacts,
    RecordedMessage,
    ReportInput,
    ReviewFacts,
    compute,
    percentile,
)
from bridge.reports.render import to_csv, to_html

ALICE, BOB, CAROL = "@alice:example.com", "@bob:example.com", "@carol:example.com"
MIN = 60_000
DAY = 86_400_000
SINCE = 1_700_000_000_000
UNTIL = SINCE + DAY


def msg(room: str, minute: float, sender: str, inbound: bool, n: list[int] = [0]) -> RecordedMessage:
    n[0] += 1
    return RecordedMessage(room, f"$e{n[0]}", SINCE + int(minute * MIN), sender, inbound)


def scripted() -> ReportInput:
    """Three conversations on two accounts: Alice answers fast, Bob slowly and once too late,
    one client is still waiting at the end of the day, and one message lies outside the period."""
    ghost1, ghost2, ghost3 = "@telegram_1:example.com", "@telegram_2:example.com", "@whatsapp_3:example.com"
    portals = (
        PortalFacts("!a", "telegram", "bot1", ALICE, "Telegram bot 1"),
        PortalFacts("!b", "telegram", "bot1", BOB, "Telegram bot 1"),
        PortalFacts("!c", "whatsapp", "1001", BOB, "WhatsApp number 1001"),
    )
    messages = (
        # !a: two waits, answered after 2 and 4 minutes by Alice.
        msg("!a", 0, ghost1, True),
        msg("!a", 1, ghost1, True),  # the wait is already open
        msg("!a", 2, ALICE, False),
        msg("!a", 10, ghost1, True),
        msg("!a", 14, ALICE, False),
        msg("!a", 15, ALICE, False),  # no wait open: a message, no response time
        # !b: Bob answers after 90 minutes (over a 60-minute SLA); Alice helps once after 6.
        msg("!b", 0, ghost2, True),
        msg("!b", 90, BOB, False),
        msg("!b", 100, ghost2, True),
        msg("!b", 106, ALICE, False),
        # !c: the client waits from minute 1300 to the end of the day (140 minutes: over the SLA).
        msg("!c", 1300, ghost3, True),
        # Outside the period: counted nowhere.
        RecordedMessage("!c", "$late", UNTIL + MIN, BOB, False),
    )
    denials = (
        AuditDenial(SINCE + 5 * MIN, ALICE, "sharing.card_numbers"),
        AuditDenial(SINCE + 6 * MIN, ALICE, "sharing.card_numbers"),
        AuditDenial(SINCE + 7 * MIN, BOB, "sharing.blocked_file_types"),
        AuditDenial(SINCE - MIN, BOB, "sharing.ibans"),  # before the period
    )
    reviews = (
        ReviewFacts(BOB, SINCE + 91 * MIN, SINCE + 200 * MIN),
        ReviewFacts(ALICE, SINCE + 3 * MIN, None),
    )
    teams = {ALICE: ("advisers",), BOB: ("advisers", "desk"), CAROL: ("desk",)}
    return ReportInput(SINCE, UNTIL, portals, messages, denials, reviews, teams, sla_s=3600)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0], 0.9) == pytest.approx(
        91.0
    )


def test_figures_of_a_scripted_day() -> None:
    report = compute(scripted())
    rows = {r.key: r for r in report.employees}
    alice, bob = rows[ALICE], rows[BOB]
    assert (alice.conversations, alice.messages_in, alice.messages_out) == (2, 3, 4)
    assert alice.answered_waits == 3 and alice.first_response_median_s == 240.0  # 120, 240, 360 s
    assert alice.first_response_p90_s == pytest.approx(336.0)
    assert alice.over_sla == 0 and alice.denials == {"sharing.card_numbers": 2}
    assert (alice.reviews_opened, alice.reviews_closed) == (1, 0)
    # Bob: !b (assigned, and he answered) and !c (assigned); 2 + 1 client messages are his.
    assert (bob.conversations, bob.messages_in, bob.messages_out) == (2, 3, 1)
    assert bob.first_response_median_s == 5400.0 and bob.over_sla == 2
    assert bob.denials == {"sharing.blocked_file_types": 1} and (bob.reviews_opened, bob.reviews_closed) == (
        1,
        1,
    )

    teams = {r.key: r for r in report.teams}
    assert teams["advisers"].messages_out == 5 and teams["advisers"].over_sla == 2
    assert teams["desk"].messages_out == 1 and CAROL not in rows  # Carol did nothing: no row

    accounts = {r.key: r for r in report.accounts}
    assert accounts["telegram:bot1"].label == "Telegram bot 1"
    assert (accounts["telegram:bot1"].conversations, accounts["telegram:bot1"].messages_in) == (2, 5)
    assert (accounts["whatsapp:1001"].messages_in, accounts["whatsapp:1001"].messages_out) == (1, 0)
    assert accounts["whatsapp:1001"].over_sla == 1
    assert [r.key for r in report.networks] == ["telegram", "whatsapp"]

    total = report.total
    assert (total.conversations, total.messages_in, total.messages_out) == (3, 6, 5)
    assert total.answered_waits == 4 and total.over_sla == 2
    assert total.denials == {"sharing.blocked_file_types": 1, "sharing.card_numbers": 2}
    assert (total.reviews_opened, total.reviews_closed) == (2, 1)


def test_without_an_sla_nothing_is_over_it() -> None:
    data = scripted()
    report = compute(ReportInput(data.since_ms, data.until_ms, data.portals, data.messages, sla_s=None))
    assert report.total.over_sla == 0


def test_csv_has_one_line_per_row_with_the_same_figures() -> None:
    report = compute(scripted())
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    alice = next(r for r in rows if r["section"] == "employees" and r["key"] == ALICE)
    assert alice["messages_out"] == "4" and alice["first_response_median_s"] == "240"
    assert alice["denials"] == "sharing.card_numbers=2"
    total = next(r for r in rows if r["section"] == "total")
    assert (total["messages_in"], total["over_sla"]) == ("6", "2")
    assert len(rows) == len(report.employees) + len(report.teams) + len(report.accounts) + 2 + 1


class _Cells(HTMLParser):
    """section -> row key -> field -> data-value, read from the page's data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, dict[str, dict[str, str]]] = {}
        self.bars: list[tuple[str, str]] = []
        self._section = self._row = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._section = a.get("data-section", "")
        elif tag == "tr" and "data-key" in a:
            self._row = a["data-key"]
        elif tag == "td" and "data-field" in a:
            self.found.setdefault(self._section, {}).setdefault(self._row, {})[a["data-field"]] = a[
                "data-value"
            ]
        elif tag == "rect":
            self.bars.append((a.get("data-key", ""), a.get("data-value", "")))


def test_html_escapes_what_it_shows() -> None:
    data = scripted()
    hostile = PortalFacts("!a", "telegram", "bot1", ALICE, "<script>alert(1)</script>")
    page = to_html(compute(ReportInput(SINCE, UNTIL, (hostile,), data.messages)), company="A & B")
    assert "<script>" not in page and "&lt;script&gt;" in page and "A &amp; B" in page


def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGBA rows of an 8-bit RGB(A) PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 4 if color == 6 else 3
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, rows, stride = zlib.decompress(idat), [], width * channels
    previous = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            left = cur[i - channels] if i >= channels else 0
            up, ul = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                cur[i] = (cur[i] + left) & 255
            elif kind == 2:
                cur[i] = (cur[i] + up) & 255
            elif kind == 3:
                cur[i] = (cur[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                cur[i] = (cur[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else ul)) & 255
        rows.append(bytes(cur) if channels == 3 else bytes(b for j, b in enumerate(cur) if j % 4 != 3))
        previous = cur
    return width, height, rows


def _chromium() -> str:
    found = shutil.which("chromium")
    assert found, (
        "Debian's chromium is needed for this test; `make test` installs it (apt-get install chromium)"
    )
    return found


def _headless(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


def test_the_html_page_renders_the_figures_in_chromium(tmp_path: Path) -> None:
    report = compute(scripted())
    page = tmp_path / "report.html"
    page.write_text(to_html(report, company="Example Advisers"), encoding="utf-8")

    dom = _headless(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    cells = _Cells()
    cells.feed(dom.stdout)
    assert cells.found["employees"][ALICE]["messages_out"] == "4"
    assert cells.found["employees"][ALICE]["first_response_median_s"] == "240"
    assert cells.found["employees"][BOB]["over_sla"] == "2"
    assert cells.found["accounts"]["whatsapp:1001"]["messages_in"] == "1"
    assert cells.found["total"]["total"]["denials"] == "3"
    # One bar per row of each charted section, the value it stands for on it.
    assert (ALICE, "4") in cells.bars  # median 240 s = 4 min
    assert ("telegram:bot1", "10") in cells.bars  # 5 in + 5 out

    shot = tmp_path / "report.png"
    result = _headless(tmp_path, f"--screenshot={shot}", "--window-size=1000,2400", page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    width, height, rows = _png_pixels(shot)
    bar = bytes((0x3B, 0x6E, 0xA5))
    painted = sum(len(re.findall(re.escape(bar), row)) for row in rows)
    # The bars were drawn: thousands of pixels in their colour (an unrendered page has none).
    assert painted > 2000, f"{painted} bar pixels in a {width}x{height} screenshot"
