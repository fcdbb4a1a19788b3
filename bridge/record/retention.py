"""Retention: which conversations are past the policy's period, and purging them on request.

Nothing is purged by default: `houseline record expired` only lists, `--purge` deletes through
the homeserver's admin API (Synapse: DELETE /_synapse/admin/v2/rooms/{room_id} with purge),
legal holds always win, and every purge is audited before it is asked for.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

from bridge.backoff import Backoff, Retrying
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
    page = await reader._get(
        f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages", {"dir": "b", "limit": 1}
    )
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


class PurgeFailed(RuntimeError):
    """The homeserver did not delete the room; the portal is kept so the purge can be run again."""


#: A failed delete is asked for again this many times: Synapse (1.153 and later, element-hq/synapse
#: issue 19822) fails about half of all room deletions while the room still waits in its sliding-sync
#: recalculation table, which a background job soon empties.
PURGE_ATTEMPTS = 5
PURGE_WAIT_S = 120.0


async def purge_room(
    homeserver_url: str, admin_token: str, room_id: str, *, verify_tls: bool = True, retry_delay: float = 2.0
) -> str:
    """Have Synapse delete and purge the room, and wait until it says the purge is complete;
    returns the delete id. Raises PurgeFailed with Synapse's reason when it could not."""
    connector = aiohttp.TCPConnector(ssl=None if verify_tls else False)
    headers = {"Authorization": f"Bearer {admin_token}"}
    last_error = ""
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        for attempt in range(1, PURGE_ATTEMPTS + 1):
            async with http.delete(
                f"{homeserver_url}/_synapse/admin/v2/rooms/{quote(room_id, safe='')}",
                json={"purge": True, "block": False},
                headers=headers,
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise PurgeFailed(
                        f"the homeserver refused the purge of {room_id} ({resp.status} {body.get('errcode')}: {body.get('error')})"
                    )
            delete_id = str(body.get("delete_id", ""))
            status, last_error = await _delete_outcome(http, homeserver_url, headers, delete_id)
            if status == "complete":
                return delete_id
            await asyncio.sleep(retry_delay * attempt)
    raise PurgeFailed(
        f"the homeserver could not purge {room_id} after {PURGE_ATTEMPTS} attempts: {last_error or 'no reason given'}"
    )


async def _delete_outcome(
    http: aiohttp.ClientSession, homeserver_url: str, headers: dict[str, str], delete_id: str
) -> tuple[str, str]:
    """("complete" or "failed", Synapse's error) once the delete has ended."""
    deadline = time.monotonic() + PURGE_WAIT_S
    retry = Retrying(Backoff(first=0.1, cap=2.0))
    while True:
        async with http.get(
            f"{homeserver_url}/_synapse/admin/v2/rooms/delete_status/{quote(delete_id, safe='')}",
            headers=headers,
        ) as resp:
            body = await resp.json(content_type=None)
        status = str(body.get("status", "")) if resp.status == 200 else ""
        if status in ("complete", "failed"):
            return status, str(body.get("error") or "")
        if time.monotonic() > deadline:
            return "failed", f"still {status or resp.status} after {PURGE_WAIT_S:.0f}s"
        await asyncio.sleep(retry.next_delay())
