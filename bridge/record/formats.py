"""Writing an export: the record, the chosen rendering, then the seal.

Every format shares the same skeleton (events.jsonl and media first, manifest.json last, so the
manifest hashes exactly what is on disk); only the rendering in between differs.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bridge.record.eml import write_eml
from bridge.record.html import write_html
from bridge.record.jsonl import write_record
from bridge.record.manifest import Manifest, build_manifest, write_manifest
from bridge.record.model import ExportRoom


def _no_rendering(
    rooms: Sequence[ExportRoom], out: Path, *, generated_at: datetime, scope: Mapping[str, Any]
) -> None:
    """For jsonl the record itself is the deliverable."""


def _eml(rooms: Sequence[ExportRoom], out: Path, *, generated_at: datetime, scope: Mapping[str, Any]) -> None:
    write_eml(rooms, out)


_Renderer = Callable[..., None]
_RENDERERS: dict[str, _Renderer] = {"jsonl": _no_rendering, "eml": _eml, "html": write_html}
FORMATS = tuple(_RENDERERS)


def write_export(
    rooms: Sequence[ExportRoom],
    out_dir: str | Path,
    fmt: str,
    *,
    generated_at: datetime,
    scope: Mapping[str, Any],
) -> Manifest:
    """Write and seal an export of ``rooms`` into ``out_dir`` (new or empty).

    ``generated_at`` must be timezone-aware (it is stored in UTC): an export's time is evidence
    and may not depend on the exporting machine's zone. ``scope`` (who asked, which portals,
    which period...) is stored verbatim and must be JSON-serialisable.
    """
    if fmt not in _RENDERERS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if generated_at.tzinfo is None or generated_at.utcoffset() is None:
        raise ValueError("generated_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
    json.dumps(scope)  # fails before anything is written, not after
    _distinct_rooms(rooms)
    generated_at = generated_at.astimezone(timezone.utc)
    out = _fresh_directory(Path(out_dir))
    lines = write_record(rooms, out)
    _RENDERERS[fmt](rooms, out, generated_at=generated_at, scope=scope)
    manifest = build_manifest(out, fmt=fmt, generated_at=generated_at, scope=scope, rooms=rooms, lines=lines)
    write_manifest(out, manifest)
    return manifest


def _distinct_rooms(rooms: Sequence[ExportRoom]) -> None:
    """A room listed twice would write its files twice over the same paths."""
    seen: set[str] = set()
    for room in rooms:
        if room.room_id in seen:
            raise ValueError(f"room {room.room_id} is listed twice; export each room once")
        seen.add(room.room_id)


def _fresh_directory(out: Path) -> Path:
    """Refuse to mix an export with files already there: the manifest would seal them too."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory; exports go into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    return out
