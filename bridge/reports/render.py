"""A report as CSV (for a spreadsheet) or as one self-contained HTML page (for a manager).

The HTML page has no scripts and no external assets (styles inline, charts as inline SVG), so
it opens the same from a mail attachment, a file share or an archive years later, and nothing
in it calls out. Every figure cell carries ``data-field`` so a test (or a scraper) can read
the page back without parsing its layout.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable
from datetime import datetime, timezone

from bridge.reports.model import Report, Row

__all__ = ["FIELDS", "to_csv", "to_html"]

#: Columns in order: (field, heading).
FIELDS: tuple[tuple[str, str], ...] = (
    ("conversations", "Conversations"),
    ("messages_in", "Messages in"),
    ("messages_out", "Messages out"),
    ("first_response_median_s", "First response, median"),
    ("first_response_p90_s", "First response, p90"),
    ("answered_waits", "Answered waits"),
    ("over_sla", "Waits over SLA"),
    ("denials", "Denials"),
    ("reviews_opened", "Reviews opened"),
    ("reviews_closed", "Reviews closed"),
)


def _sections(report: Report) -> list[tuple[str, str, tuple[Row, ...]]]:
    return [
        ("employees", "Per employee", report.employees),
        ("teams", "Per team", report.teams),
        ("accounts", "Per company account", report.accounts),
        ("networks", "Per network", report.networks),
        ("total", "All conversations", (report.total,)),
    ]


def _day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def _denials(row: Row) -> str:
    return "; ".join(f"{rule}={n}" for rule, n in row.denials.items())


def _csv_value(row: Row, name: str) -> str:
    if name == "denials":
        return _denials(row)
    value = getattr(row, name)
    return _seconds(value) if name.startswith("first_response") else str(value)


def to_csv(report: Report) -> str:
    """One table: a section column, then the row's key and label, then the figures (response
    times in seconds, denials as 'rule=count; …')."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "key", "label", *(name for name, _ in FIELDS)])
    for section, _, rows in _sections(report):
        for row in rows:
            writer.writerow([section, row.key, row.label, *(_csv_value(row, name) for name, _ in FIELDS)])
    return out.getvalue()


def _duration(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _cell(row: Row, name: str) -> str:
    if name == "denials":
        shown = html.escape(_denials(row)) if row.denials else "0"
        return f'<td data-field="denials" data-value="{row.denials_total}">{shown}</td>'
    value = getattr(row, name)
    if name.startswith("first_response"):
        raw = "" if value is None else f"{value:.0f}"
        return f'<td data-field="{name}" data-value="{raw}">{_duration(value)}</td>'
    return f'<td data-field="{name}" data-value="{value}">{value}</td>'


def _table(section: str, rows: tuple[Row, ...]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in FIELDS)
    body = "".join(
        f'<tr data-key="{html.escape(r.key)}"><th scope="row">{html.escape(r.label)}</th>'
        + "".join(_cell(r, name) for name, _ in FIELDS)
        + "</tr>"
        for r in rows
    )
    empty = "" if rows else f'<tr><td colspan="{len(FIELDS) + 1}">Nothing in this period.</td></tr>'
    return f'<table data-section="{section}"><thead><tr><th></th>{head}</tr></thead><tbody>{body}{empty}</tbody></table>'


def _bar_chart(section: str, rows: tuple[Row, ...], value: Callable[[Row], float], unit: str) -> str:
    """Horizontal bars, one per row, scaled to the largest value: readable without a legend."""
    if not rows:
        return ""
    width, bar_h, gap, label_w = 640, 18, 6, 220
    top = max((value(r) for r in rows), default=0) or 1
    height = len(rows) * (bar_h + gap) + gap
    bars = []
    for i, r in enumerate(rows):
        y = gap + i * (bar_h + gap)
        v = value(r)
        w = (width - label_w - 80) * v / top
        bars.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 5}" text-anchor="end">{html.escape(r.label[:32])}</text>'
            f'<rect data-key="{html.escape(r.key)}" data-value="{v:g}" x="{label_w}" y="{y}" width="{w:.1f}" '
            f'height="{bar_h}" fill="#3b6ea5"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h - 5}">{v:g} {unit}</text>'
        )
    return (
        f'<svg data-chart="{section}" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">{"".join(bars)}</svg>'
    )


def _chart(section: str, rows: tuple[Row, ...]) -> str:
    if section == "employees":
        return "<h3>Median first response (minutes)</h3>" + _bar_chart(
            section,
            rows,
            lambda r: round((r.first_response_median_s or 0) / 60, 1),
            "min",
        )
    return "<h3>Messages (in + out)</h3>" + _bar_chart(
        section, rows, lambda r: r.messages_in + r.messages_out, ""
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th[scope=row], thead th:first-child { text-align: left; }
thead th { background: #f0f3f7; }
h2 { margin-top: 1.5em; }
.note { color: #555; font-size: 90%; max-width: 60em; }
"""


def to_html(report: Report, *, company: str = "") -> str:
    title = f"Client service report{' — ' + company if company else ''}"
    sla = (
        f"Waits over SLA: longer than {_duration(report.sla_s)} before an answer (sla.remind_after)."
        if report.sla_s
        else "No SLA is configured (sla.remind_after), so no wait counts as over it."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p data-field="period">{_day(report.since_ms)} to {_day(report.until_ms)}</p>',
    ]
    for section, heading, rows in _sections(report):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_table(section, rows))
        if section != "total":
            parts.append(_chart(section, rows))
    parts.append(
        '<p class="note">First response: from the client message that opened a wait to the next company '
        "message that reached the client, on the wall clock. Client messages count for the conversation's "
        f"assignee, company messages for their sender. {html.escape(sla)} Denials: audited decisions "
        "with verdict deny, by rule. Read from the record: the homeserver's messages, the message map, the "
        "audit chain and the review queue.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
