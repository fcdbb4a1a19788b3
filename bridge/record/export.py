"""``houseline export``: portals out of the homeserver, into verifiable files.

Reads through the client-server API as the bot (any homeserver), hands the events and media to
the format writers, and reports progress on a terminal only.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from bridge.audit_log import AuditLog
from bridge.config import Config
from bridge.record.formats import write_export
from bridge.record.reader import HomeserverReader
from bridge.store import PortalRow, Store


class ExportError(Exception):
    pass


@dataclass(frozen=True)
class ExportScope:
    rooms: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    everything: bool = False
    since_ms: int | None = None
    until_ms: int | None = None

    def as_dict(self) -> dict:
        return {
            "rooms": list(self.rooms),
            "clients": list(self.clients),
            "all": self.everything,
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
        }


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    rooms: int
    events: int
    seconds: float
    #: The manifest's chain value: kept in the audit trail, it also catches an export whose files
    #: and manifest were rewritten together.
    chain: str = ""


def parse_time(value: str | None, what: str) -> int | None:
    """ISO 8601 date or date-time (UTC if no zone) → epoch milliseconds."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ExportError(
            f"--{what}: '{value}' is not a date; write it as 2026-11-23 or 2026-11-23T14:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


async def select_portals(store: Store, scope: ExportScope) -> list[PortalRow]:
    portals = await store.all_portals()
    if scope.everything:
        return portals
    chosen = [p for p in portals if p.room_id in scope.rooms or p.chat_id in scope.clients]
    missing = [r for r in scope.rooms if r not in {p.room_id for p in chosen}]
    missing += [c for c in scope.clients if c not in {p.chat_id for p in chosen}]
    if missing:
        raise ExportError(f"no client conversation for: {', '.join(missing)} (see `!hl rooms`)")
    return chosen


async def run_export(
    config: Config,
    *,
    as_token: str,
    store: Store,
    scope: ExportScope,
    fmt: str,
    out_dir: Path,
    progress: Callable[[str], None] | None = None,
    audit: AuditLog | None = None,
) -> ExportResult:
    if fmt not in ("jsonl", "eml", "html"):
        raise ExportError(f"--format: '{fmt}' is not a format; use jsonl, eml or html")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} is not empty; give a new or empty directory")
    t0 = time.monotonic()
    portals = await select_portals(store, scope)
    namer = config.ghost_namer()
    rooms = []
    async with HomeserverReader(
        config.homeserver.url, as_token, config.bot_mxid, config.homeserver.verify_tls
    ) as reader:
        for i, portal in enumerate(portals, 1):
            if progress:
                progress(f"reading {i}/{len(portals)}: {portal.name}")
            rooms.append(
                await reader.room(
                    room_id=portal.room_id,
                    name=portal.name,
                    network=portal.network,
                    account=portal.account,
                    chat_id=portal.chat_id,
                    is_client=namer.is_ghost,
                    bot=config.bot_mxid,
                    since_ms=scope.since_ms,
                    until_ms=scope.until_ms,
                )
            )
    if progress:
        progress(f"writing {fmt} to {out_dir}")
    manifest = write_export(
        rooms, out_dir, fmt, generated_at=datetime.now(timezone.utc), scope=scope.as_dict()
    )
    events = sum(len(r.events) for r in rooms)
    result = ExportResult(out_dir, len(rooms), events, time.monotonic() - t0, manifest.chain)
    await (audit or AuditLog(store)).record(
        actor="houseline-export",
        action="export.written",
        subject=str(out_dir),
        verdict="allow",
        rule="record.export",
        format=fmt,
        rooms=[r.room_id for r in rooms],
        events=events,
        chain=manifest.chain,
    )
    return result


def terminal_progress() -> Callable[[str], None] | None:
    """A one-line progress display on a terminal; nothing when output is a file or CI."""
    if not sys.stderr.isatty():
        return None

    def show(text: str) -> None:
        sys.stderr.write("\r\033[K" + text[:100])
        sys.stderr.flush()

    return show
