"""Retention: which conversations are past the policy's period, and purging them on request.

Nothing is purged by default: `houseline record expired` only lists, `--purge` deletes through
the homeserver's admin API (Synapse: DELETE /_synapse/admin/v2/rooms/{room_id} with purge),
legal holds always win, and every purge is audited before it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from bridge.record.reader import HomeserverReader
from bridge.store import PortalRow, Store
from policies.model import Policy

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Expiry:
    portal: PortalRow
    last_activity_ms: int
    retention_days: int


async def last_activity(reader: HomeserverReader, room_id: str) -> int:
    page = await reader._get(f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages", {"dir": "b", "limit": 1})
    chunk = page.get("chunk") or []
    return int(chunk[0].get("origin_server_ts", 0)) if chunk else 0


async def expired(reader: HomeserverReader, store: Store, policy: Policy, now_ms: int) -> list[Expiry]:
    """Portals whose newest event is older than their retention period and that are not on hold."""
    found = []
    for portal in await store.all_portals():
        days = policy.retention.days_for(portal.network)
        if days is None or portal.legal_hold:
            continue
        last = await last_activity(reader, portal.room_id)
        if now_ms - last > days * DAY_MS:
            found.append(Expiry(portal, last, days))
    return found


async def purge_room(homeserver_url: str, admin_token: str, room_id: str, *, verify_tls: bool = True) -> str:
    """Ask Synapse to delete and purge the room; returns its delete id (the purge runs on)."""
    connector = aiohttp.TCPConnector(ssl=None if verify_tls else False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.delete(
            f"{homeserver_url}/_synapse/admin/v2/rooms/{quote(room_id, safe='')}",
            json={"purge": True, "block": False},
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"the homeserver refused the purge of {room_id} ({resp.status} {body.get('errcode')}: {body.get('error')})")
            return str(body.get("delete_id", ""))
