"""The canonical record: ``events.jsonl`` and the media files, written for every format.

Regulators and archivers get the homeserver's events unchanged, one per line, so nothing a
renderer chose to show or hide can be mistaken for the record. The bytes of each line are what
the manifest's hash chain commits to, so the serialisation is fixed: sorted keys, no spaces,
UTF-8 (not \\u escapes), one "\\n" after each line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from bridge.record.model import ExportEvent, ExportRoom, media_paths

EVENTS_FILE = "events.jsonl"


def write_record(rooms: Sequence[ExportRoom], out: Path) -> list[bytes]:
    """Write events.jsonl and the media; return the lines (without newlines) for the manifest."""
    lines: list[bytes] = []
    for room in rooms:
        paths = media_paths(room)
        _write_media(room, paths, out)
        lines.extend(record_line(room, event, paths.get(event.event_id)) for event in room.events)
    with (out / EVENTS_FILE).open("wb") as f:
        for line in lines:
            f.write(line + b"\n")
    return lines


def record_line(room: ExportRoom, event: ExportEvent, media_file: str | None) -> bytes:
    """One event with where it happened, its remote ids and its file, as canonical JSON."""
    record: dict[str, Any] = {
        "room_id": room.room_id,
        "portal": {
            "name": room.name,
            "network": room.network,
            "account": room.account,
            "chat_id": room.chat_id,
        },
        "event": event.event,
        "remote": event.remote,
    }
    if media_file is not None:
        record["media_file"] = media_file
    return canonical_json(record)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, raw UTF-8. A lone surrogate (legal in JSON, not in UTF-8) falls
    back to \\u escapes for that line only, so one odd event cannot stop an export."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _write_media(room: ExportRoom, paths: dict[str, str], out: Path) -> None:
    for event in room.events:
        path = paths.get(event.event_id)
        media = room.media_of(event)
        if path is None or media is None:
            continue
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_bytes(media.data)
