"""The readable transcript: one self-contained HTML page per portal, and an index.

It is for people (compliance officers, a regulator's examiner) reading in a browser, so it must
be safe to open: message HTML goes through an allow-list sanitiser, everything else is escaped,
and the pages carry no JavaScript and load nothing from outside the export. What happened to a
message later (edits, reactions, the client deleting it, the policy refusing it) is shown on the
message itself, so a reader never has to reconstruct it; the unchanged events are in
events.jsonl.
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from bridge.record.model import (
    MESSAGE_TYPES,
    ExportEvent,
    ExportRoom,
    Reading,
    caption_of,
    deleted_id,
    deletion_ts,
    html_of,
    is_media,
    media_paths,
    read_room,
    redaction_note,
    room_dir,
    text_of,
    utc,
    utc_iso,
    utc_text,
)

# --------------------------------------------------------------------------------------------
# Sanitising message HTML

_ALLOWED_TAGS = frozenset(
    {
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
)
#: Elements whose content must not appear at all (code, styles, reply fallbacks, embedded docs).
_DROPPED_WITH_CONTENT = frozenset(
    {
        "script",
        "style",
        "mx-reply",
        "head",
        "title",
        "iframe",
        "object",
        "embed",
        "template",
        "noscript",
        "textarea",
        "select",
        "svg",
        "math",
        "frameset",
        "noembed",
        "xmp",
    }
)
_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_URL_JUNK = re.compile(r"[\x00-\x20\x7f]")


class _Sanitiser(HTMLParser):
    """Keeps the allowed tags (balanced) and escaped text; drops everything else."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED_WITH_CONTENT:
            self.skipping += 1
        elif not self.skipping and tag in _ALLOWED_TAGS:
            self._open(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.skipping and tag in _ALLOWED_TAGS:
            self._open(tag, attrs)
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_WITH_CONTENT:
            self.skipping = max(0, self.skipping - 1)
        elif not self.skipping and tag in self.open:
            while self.open:
                closed = self.open.pop()
                self.out.append(f"</{closed}>")
                if closed == tag:
                    break

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(html.escape(data, quote=False))

    def _open(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.out.append("<br>")
            return
        self.out.append(f"<{tag}{_attributes(tag, attrs)}>")
        self.open.append(tag)

    def result(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{tag}>" for tag in reversed(self.open))


def _attributes(tag: str, attrs: list[tuple[str, str | None]]) -> str:
    """Only a link's http(s)/mailto target and a spoiler marker survive."""
    kept = ""
    for name, value in attrs:
        if tag == "a" and name == "href" and value is not None:
            url = _URL_JUNK.sub("", value)
            if url.lower().startswith(_SAFE_SCHEMES):
                kept += f' href="{html.escape(url, quote=True)}" rel="noopener noreferrer nofollow"'
        elif tag == "span" and name == "data-mx-spoiler":
            kept += f' data-mx-spoiler="{html.escape(value or "", quote=True)}"'
    return kept


def sanitise(markup: str) -> str:
    """Matrix message HTML reduced to the allow-list; safe to embed in a page or an email."""
    parser = _Sanitiser()
    parser.feed(markup)
    return parser.result()


# --------------------------------------------------------------------------------------------
# Pages

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:56rem;padding:1rem;color:#1c1c1c}
header{border-bottom:1px solid #ccc;margin-bottom:1rem}
dt{font-weight:600;float:left;clear:left;width:9rem}dd{margin-left:10rem}
.day{text-align:center;color:#666;margin:1.2rem 0 .4rem;font-weight:600}
.msg{border-left:3px solid #9ab;padding:.3rem .7rem;margin:.6rem 0}
.msg.client{border-color:#2a7}.msg.notice{border-color:#bbb;color:#555}
.msg.denied,.msg.held{border-color:#c33}.msg.deleted{border-color:#d80}
.meta{color:#555;font-size:.85em}.sender{font-weight:600;color:#222}
.text{white-space:pre-wrap}.reply{margin:.2rem 0;padding:.2rem .5rem;border-left:2px solid #ccc;color:#555}
.edit{color:#444;margin-top:.3rem}.mark{font-weight:700;margin:.3rem 0}
.deleted-mark{color:#a50}.denied-mark{color:#b00}
.small{color:#777;font-size:.85em;margin:.2rem 0}
.reactions{list-style:none;padding:0;margin:.3rem 0;font-size:.9em}
img{max-width:100%;max-height:24rem}span[data-mx-spoiler]{background:#ddd}
footer{border-top:1px solid #ccc;margin-top:2rem;color:#666;font-size:.85em}
"""
#: Belt and braces: even a sanitiser bug could not run a script or submit anything.
_CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-src 'none'"


def write_html(
    rooms: Sequence[ExportRoom], out: Path, *, generated_at: datetime, scope: Mapping[str, Any]
) -> None:
    folder = out / "html"
    folder.mkdir(parents=True, exist_ok=True)
    exported = generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    for room in rooms:
        (folder / f"{room_dir(room)}.html").write_text(transcript(room, exported), encoding="utf-8")
    (folder / "index.html").write_text(index_page(rooms, exported, scope), encoding="utf-8")


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def index_page(rooms: Sequence[ExportRoom], exported: str, scope: Mapping[str, Any]) -> str:
    items = "\n".join(
        f'<li><a href="{quote(room_dir(room))}.html">{_e(room.name)}</a> '
        f'<span class="small">{_e(room.network)} · chat {_e(room.chat_id)} · {len(room.events)} events</span></li>'
        for room in rooms
    )
    scope_rows = "".join(
        f"<dt>{_e(str(k))}</dt><dd>{_e(json.dumps(v, ensure_ascii=False, default=str))}</dd>"
        for k, v in scope.items()
    )
    body = (
        f"<header><h1>Houseline export</h1><dl><dt>Exported</dt><dd>{_e(exported)}</dd>{scope_rows}</dl></header>\n"
        f"<main><ul>\n{items}\n</ul></main>\n{_footer()}"
    )
    return _page("Houseline export", body)


def transcript(room: ExportRoom, exported: str) -> str:
    reading = read_room(room)
    paths = media_paths(room)
    parts: list[str] = []
    day = ""
    for event in room.events:
        rendered = _render(room, reading, paths, event)
        if not rendered:
            continue
        today = utc(event.ts).strftime("%Y-%m-%d")
        if today != day:
            parts.append(f'<p class="day">{today}</p>')
            day = today
        parts.append(rendered)
    body = f"{_header(room, exported)}\n<main>\n" + "\n".join(parts) + f"\n</main>\n{_footer()}"
    return _page(f"{room.name} — Houseline export", body)


def _header(room: ExportRoom, exported: str) -> str:
    people = "".join(
        f'<li>{_e(name)} <span class="small">{_e(user)}{" · client" if user in room.clients else ""}'
        f"{' · policy bot' if user == room.bot else ''}</span></li>"
        for user, name in room.participants.items()
    )
    rows = [
        ("Network", room.network),
        ("Account", room.account),
        ("Chat", room.chat_id),
        ("Matrix room", room.room_id),
        ("Exported", exported),
        ("Times", "all times are UTC"),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<header><p><a href="index.html">All portals</a></p><h1>{_e(room.name)}</h1><dl>{dl}<dt>Participants</dt><dd><ul>{people}</ul></dd></dl></header>'


def _footer() -> str:
    return (
        "<footer>The canonical record is events.jsonl (every event unchanged, hash-chained in "
        "manifest.json); technical events such as power levels appear only there.</footer>"
    )


def _render(room: ExportRoom, reading: Reading, paths: dict[str, str], event: ExportEvent) -> str:
    """One event's HTML, or "" when it is shown on its message or only in events.jsonl."""
    if reading.target(event) is not None:
        return ""
    if event.type in MESSAGE_TYPES:
        return _message(room, reading, paths, event)
    if event.type == "m.room.member":
        return _small(event, _membership(room, event))
    if event.type == "m.reaction":
        what = (
            redaction_note(room, event)
            if event.is_redacted
            else f"reacted {event.relation.get('key', '')!s} to a message not in this export"
        )
        return _small(event, f"{room.name_of(event.sender)}: {what}")
    if event.type in {"m.room.name", "m.room.topic"} and not event.is_redacted:
        field = "name" if event.type == "m.room.name" else "topic"
        return _small(
            event, f"{room.name_of(event.sender)} set the room {field} to “{event.content.get(field, '')!s}”"
        )
    return ""


def _small(event: ExportEvent, text: str) -> str:
    return f'<p class="small">{_time(event.ts)} {_e(text)}</p>'


def _message(room: ExportRoom, reading: Reading, paths: dict[str, str], event: ExportEvent) -> str:
    kind = reading.kind(event)
    classes = ["msg", kind]
    if event.sender in room.clients:
        classes.append("client")
    if event.event_id in reading.deletions:
        classes.append("deleted")
    stray = f' <span class="small">({_e(_stray_edit(reading, event))})</span>' if kind == "edit" else ""
    inner = [
        f'<div class="meta">{_time(event.ts)} <span class="sender">{_e(room.name_of(event.sender))}</span>{stray}</div>',
        _reply_quote(room, reading, event),
        _body(room, paths, event),
        *(_edit_line(event, edit) for edit in reading.edits.get(event.event_id, ())),
        _marks(room, reading, event),
        _reactions(room, reading, event),
    ]
    return (
        f'<article class="{" ".join(classes)}" id="{_anchor(event.event_id)}">'
        + "".join(inner)
        + "</article>"
    )


def _stray_edit(reading: Reading, event: ExportEvent) -> str:
    """Why an edit is shown on its own instead of on its message."""
    if event.relates_to in reading.by_id:
        return f"claims to edit {event.relates_to}, a message by someone else; Matrix does not apply it"
    return f"edit of {event.relates_to}, which is not in this export"


def _body(room: ExportRoom, paths: dict[str, str], event: ExportEvent) -> str:
    if event.is_redacted:
        return f'<div class="text">{_e(redaction_note(room, event))}</div>'
    if is_media(event):
        return _media(room, paths, event)
    return _text_block(event)


def _text_block(event: ExportEvent) -> str:
    """Sanitised formatted text when there is some, otherwise the escaped plain body."""
    markup = html_of(event)
    if markup is not None:
        return f'<div class="html">{sanitise(markup)}</div>'
    return f'<div class="text">{_e(text_of(event))}</div>'


def _media(room: ExportRoom, paths: dict[str, str], event: ExportEvent) -> str:
    media = room.media_of(event)
    caption = caption_of(event)
    name = (
        media.file_name
        if media
        else str(event.content.get("filename") or event.content.get("body") or "file")
    )
    path = paths.get(event.event_id)
    if media is None or path is None:
        shown = f'<p class="small">[file not included in this export: {_e(name)}]</p>'
    elif media.mimetype.startswith("image/") or (not media.mimetype and event.msgtype == "m.image"):
        shown = f'<figure><img src="../{quote(path)}" alt="{_e(name)}"><figcaption class="small">{_e(name)}</figcaption></figure>'
    else:
        shown = (
            f'<p><a href="../{quote(path)}" download>{_e(name)}</a> '
            f'<span class="small">({_e(media.mimetype or "unknown type")}, {_size(len(media.data))})</span></p>'
        )
    if not caption:
        return shown
    markup = html_of(event)
    text = (
        f'<div class="html">{sanitise(markup)}</div>'
        if markup is not None
        else f'<div class="text">{_e(caption)}</div>'
    )
    return shown + text


def _reply_quote(room: ExportRoom, reading: Reading, event: ExportEvent) -> str:
    target_id = event.reply_to
    if not target_id or reading.kind(event) == "client-deleted":
        return ""
    target = reading.by_id.get(target_id)
    if target is None:
        return f'<blockquote class="reply">In reply to a message not in this export ({_e(target_id)})</blockquote>'
    text = (
        redaction_note(room, target)
        if target.is_redacted
        else (text_of(target) or caption_of(target) or str(target.content.get("filename", "")))
    )
    short = text if len(text) <= 200 else text[:199] + "…"
    return (
        f'<blockquote class="reply">In reply to <a href="#{_anchor(target_id)}">{_e(room.name_of(target.sender))}</a>, '
        f'{_e(utc_text(target.ts))}: <span class="text">{_e(short)}</span></blockquote>'
    )


def _edit_line(original: ExportEvent, edit: ExportEvent) -> str:
    when = _when(edit.ts, original.ts)
    markup = html_of(edit)
    text = sanitise(markup) if markup is not None else f'<span class="text">{_e(text_of(edit))}</span>'
    return f'<div class="edit" id="{_anchor(edit.event_id)}"><time datetime="{utc_iso(edit.ts)}">edited at {_e(when)}</time>: {text}</div>'


def _marks(room: ExportRoom, reading: Reading, event: ExportEvent) -> str:
    marks = []
    notice = reading.deletions.get(event.event_id)
    if notice is not None:
        marks.append(
            f'<p class="mark deleted-mark">deleted by the client at {_e(utc_text(deletion_ts(notice)))} — kept as part of the record</p>'
        )
    denial = reading.denials.get(event.event_id)
    if denial is not None:
        label = "HELD" if denial.held else "NOT SENT"
        reason = str(denial.notice.content.get("body", ""))
        marks.append(
            f'<p class="mark denied-mark">{label} — {_e(denial.rule)}</p><p class="small">{_e(room.name_of(denial.notice.sender))}: {_e(reason)}</p>'
        )
    if reading.kind(event) == "client-deleted":
        deleted = deleted_id(event)
        marks.append(
            f'<p class="mark deleted-mark">deleted by the client at {_e(utc_text(deletion_ts(event)))} ({_e(deleted)}, not in this export)</p>'
        )
    return "".join(marks)


def _reactions(room: ExportRoom, reading: Reading, event: ExportEvent) -> str:
    reactions = reading.reactions.get(event.event_id, ())
    if not reactions:
        return ""
    items = "".join(
        f'<li>{_e(str(r.relation.get("key", "")))} {_e(room.name_of(r.sender))} <span class="small">{_e(_when(r.ts, event.ts))}</span></li>'
        for r in reactions
    )
    return f'<ul class="reactions">{items}</ul>'


def _membership(room: ExportRoom, event: ExportEvent) -> str:
    """'Alice joined', 'Bob was removed by Alice: reason' — short lines between messages."""
    if event.is_redacted:
        return redaction_note(room, event)
    who = room.name_of(event.state_key or "")
    by = room.name_of(event.sender)
    membership = str(event.content.get("membership", ""))
    unsigned = event.event.get("unsigned")
    prev_content = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
    previous = str(prev_content.get("membership", "")) if isinstance(prev_content, dict) else ""
    reason = str(event.content.get("reason", ""))
    own = event.sender == event.state_key
    text = {
        "join": f"{who} {'changed their profile' if previous == 'join' else 'joined'}",
        "leave": f"{who} left" if own else f"{who} was removed by {by}",
        "invite": f"{who} was invited by {by}",
        "ban": f"{who} was banned by {by}",
        "knock": f"{who} asked to join",
    }.get(membership, f"{who}: membership {membership}")
    return text + (f": {reason}" if reason else "")


# --------------------------------------------------------------------------------------------
# Small helpers


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _time(ts: int) -> str:
    return f'<time datetime="{utc_iso(ts)}" title="{utc_text(ts)}">{utc(ts).strftime("%H:%M:%S")}</time>'


def _when(ts: int, reference: int) -> str:
    """'10:05 UTC' on the same day as the message, the full date otherwise."""
    moment, ref = utc(ts), utc(reference)
    return (
        moment.strftime("%H:%M UTC") if moment.date() == ref.date() else moment.strftime("%Y-%m-%d %H:%M UTC")
    )


def _anchor(event_id: str) -> str:
    return "ev-" + re.sub(r"[^A-Za-z0-9_-]", "_", event_id)


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1048576:.1f} MB"
