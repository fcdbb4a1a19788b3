"""Client profiles: what the company records about a client beyond the network's own profile
(its CRM id, tags, KYC status, consents), edited through the API and shown by ``!hl whois``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mautrix.util.async_db import Database

FIELDS = ("display_name", "language", "region", "crm_id", "tags", "kyc_status", "consent")


@dataclass(frozen=True)
class ClientProfile:
    network: str
    remote_id: str
    display_name: str | None = None
    language: str | None = None
    region: str | None = None
    crm_id: str | None = None
    tags: tuple[str, ...] = ()
    kyc_status: str | None = None
    consent: dict[str, bool] = field(default_factory=dict)
    updated_at: int | None = None
    updated_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


async def get_profile(db: Database, network: str, remote_id: str) -> ClientProfile | None:
    row = await db.fetchrow(
        "SELECT display_name, language, region, crm_id, tags, kyc_status, consent, updated_at, updated_by"
        " FROM client_profile WHERE network=$1 AND remote_id=$2",
        network,
        remote_id,
    )
    if row is None:
        return None
    return ClientProfile(
        network,
        remote_id,
        row["display_name"],
        row["language"],
        row["region"],
        row["crm_id"],
        tuple(json.loads(row["tags"])),
        row["kyc_status"],
        json.loads(row["consent"]),
        int(row["updated_at"]),
        row["updated_by"],
    )


async def update_profile(
    db: Database, base: ClientProfile, changes: dict[str, Any], by: str
) -> ClientProfile:
    """The given fields changed (None clears one), the rest kept; one upsert."""
    fresh = replace(
        base,
        **{k: (tuple(v) if k == "tags" and v is not None else v) for k, v in changes.items() if k in FIELDS},
        updated_at=int(time.time() * 1000),
        updated_by=by,
    )
    await db.execute(
        "INSERT INTO client_profile (network, remote_id, display_name, language, region, crm_id, tags, kyc_status, consent, updated_at, updated_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (network, remote_id) DO UPDATE SET"
        " display_name=excluded.display_name, language=excluded.language, region=excluded.region, crm_id=excluded.crm_id,"
        " tags=excluded.tags, kyc_status=excluded.kyc_status, consent=excluded.consent, updated_at=excluded.updated_at,"
        " updated_by=excluded.updated_by",
        fresh.network,
        fresh.remote_id,
        fresh.display_name,
        fresh.language,
        fresh.region,
        fresh.crm_id,
        json.dumps(list(fresh.tags or ())),
        fresh.kyc_status,
        json.dumps(fresh.consent or {}),
        fresh.updated_at,
        fresh.updated_by,
    )
    return fresh


async def last_activity(db: Database) -> dict[str, int]:
    """Per room, when the last message was bridged (ms)."""
    rows = await db.fetch("SELECT room_id, MAX(created_at) AS at FROM message GROUP BY room_id")
    return {r["room_id"]: int(r["at"]) for r in rows if r["at"] is not None}


async def rooms_held_for_senior(db: Database) -> set[str]:
    """Rooms with an employee message waiting for a senior (the API's status=held)."""
    return {r["room_id"] for r in await db.fetch("SELECT DISTINCT room_id FROM held_for_senior")}


async def ghost_name(db: Database, network: str, remote_id: str) -> str | None:
    return await db.fetchval(
        "SELECT displayname FROM ghost WHERE network=$1 AND remote_id=$2", network, remote_id
    )
