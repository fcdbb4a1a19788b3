"""The HTTP API, end to end: the bridge as its own process with the API on, real Synapse, the
sandboxes, and a client over HTTP. Authentication and scopes, the conversation and message
reads (the same events the homeserver holds), profiles, the writes sharing the bot commands'
rules and audit, bad input answered with the field named, and a schemathesis fuzz of every
operation against docs/openapi.yaml (0 server errors, 0 responses off the document)."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from bridge.devstack import DevStack
from sandbox.employee import Employee
from sandbox.homeserver import free_port
from tests.conftest import ROOT, BridgeFactory, BridgeProcess
from tests.support import BOT, ghost_of, open_dm

EMPLOYEE, ADVISER2, OUTSIDER = "@employee:localhost", "@adviser2:localhost", "@outsider:localhost"


class ApiBridge(BridgeProcess):
    url: str
    tokens: dict[str, str]

    async def call(self, method: str, path: str, *, token: str | None = "admin", body: Any = None, raw: bytes | None = None,
                   params: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
        headers = (
            {"Authorization": f"Bearer {self.tokens[token]}"}
            if token in self.tokens
            else ({"Authorization": token} if token else {})
        )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            kwargs: dict[str, Any] = {"headers": headers, "params": params}
            if raw is not None:
                kwargs["data"] = raw
                headers["Content-Type"] = "application/json"
            elif body is not None:
                kwargs["json"] = body
            async with http.request(method, f"{self.url}{path}", **kwargs) as resp:
                assert resp.content_type == "application/json", (path, resp.status, await resp.text())
                return resp.status, await resp.json()

    def audit(self, action: str) -> list[tuple[str, str]]:
        with sqlite3.connect(self.db_path) as db:
            return db.execute(
                "SELECT actor, verdict FROM audit WHERE action=? ORDER BY seq", (action,)
            ).fetchall()


@pytest.fixture
async def api_bridge(own_bridge: BridgeFactory) -> ApiBridge:
    """A bridge with the API on, with a reader's, a writer's and an admin's token (none of
    them may appear in its log: own_bridge checks the config's secrets)."""
    tokens = {name: secrets.token_urlsafe(32) for name in ("reader", "writer", "admin")}
    port = free_port()

    def api(config: dict) -> None:
        config["api"] = {
            "enabled": True,
            "listen_port": port,
            "max_body_kb": 16,
            "tokens": [
                {"name": "crm-reader", "token": tokens["reader"], "scopes": ["read"]},
                {"name": "crm", "token": tokens["writer"], "scopes": ["read", "write"]},
                {"name": "ops", "token": tokens["admin"], "scopes": ["admin"]},
            ],
        }

    proc = await own_bridge(config=api, cls=ApiBridge)
    proc.url, proc.tokens = f"http://127.0.0.1:{port}/api/v1", tokens
    return proc


def room_path(room_id: str, suffix: str = "") -> str:
    return f"/conversations/{quote(room_id, safe='')}{suffix}"


async def test_authentication_and_scopes(api_bridge: ApiBridge) -> None:
    for token in (None, "Bearer", "Basic abc", "Bearer not-a-token"):
        status, body = await api_bridge.call("GET", "/conversations", token=token)
        assert status == 401 and body["error"]["code"] == "unauthorized", (token, body)
    status, body = await api_bridge.call(
        "POST", "/offboard", token="writer", body={"leaver": OUTSIDER, "to": ADVISER2}
    )
    assert status == 403 and "admin scope" in body["error"]["message"]
    status, body = await api_bridge.call(
        "POST", room_path("!nope:localhost", "/assign"), token="reader", body={"user": ADVISER2}
    )
    assert status == 403
    status, _ = await api_bridge.call("GET", "/conversations", token="reader")
    assert status == 200
    status, body = await api_bridge.call("GET", "/no/such/thing")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_conversations_messages_and_profiles(
    stack: DevStack, api_bridge: ApiBridge, employee: Employee, staff, new_client
) -> None:
    client = new_client("Api", "Reader")
    await client.say("first from the client")
    room = (await employee.wait_for_message("first from the client", sender=ghost_of(client))).room_id
    await employee.send_text(room, "answer from the adviser")
    await client.wait_for_text("answer from the adviser")

    status, page = await api_bridge.call(
        "GET", "/conversations", token="reader", params={"client": str(client.user_id)}
    )
    assert status == 200 and [c["room_id"] for c in page["conversations"]] == [room]
    convo = page["conversations"][0]
    assert convo["network"] == "telegram" and convo["assignee"] == EMPLOYEE and convo["last_activity"]
    status, detail = await api_bridge.call("GET", room_path(room), token="reader")
    kinds = {m["user_id"]: m["kind"] for m in detail["members"]}
    assert (
        kinds[ghost_of(client)] == "client"
        and kinds[EMPLOYEE] == "employee"
        and kinds["@houseline:localhost"] == "bot"
    )

    # Messages, paged: the same events the homeserver holds, with their remote ids.
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        params = {"limit": "2", **({"from": cursor} if cursor else {})}
        status, chunk = await api_bridge.call(
            "GET", room_path(room, "/messages"), token="reader", params=params
        )
        assert status == 200
        seen += chunk["events"]
        cursor = chunk["next"]
        if not cursor:
            break
    bodies = [e.get("content", {}).get("body") for e in seen if e["type"] == "m.room.message"]
    assert "first from the client" in bodies and "answer from the adviser" in bodies
    inbound = next(e for e in seen if e.get("content", {}).get("body") == "first from the client")
    assert inbound["net.houseline.remote_ids"] and inbound["sender"] == ghost_of(client)
    status, body = await api_bridge.call(
        "GET", room_path(room, "/messages"), token="reader", params={"from": "bogus"}
    )
    assert status == 400 and body["error"]["field"] == "from"

    # Profiles: stored by Houseline, edited through the API, audited.
    profile_path = f"/clients/telegram/{client.user_id}"
    status, profile = await api_bridge.call("GET", profile_path, token="reader")
    assert status == 200 and profile["display_name"].startswith("Api Reader") and profile["tags"] == []
    change = {
        "crm_id": "CRM-42",
        "tags": ["vip", "pension"],
        "kyc_status": "verified",
        "consent": {"marketing": False},
        "language": "de",
    }
    status, profile = await api_bridge.call("PATCH", profile_path, token="writer", body=change)
    assert status == 200 and profile["crm_id"] == "CRM-42" and profile["updated_by"] == "api:crm"
    status, again = await api_bridge.call("GET", profile_path, token="reader")
    assert again["tags"] == ["vip", "pension"] and again["consent"] == {"marketing": False}
    assert ("api:crm", "allow") in api_bridge.audit("profile.update")
    admin = staff["admin"]
    dm = await open_dm(admin)
    await admin.send_text(dm, f"!hl whois {client.user_id}")
    whois = await admin.wait_for_event(
        lambda e: e.room_id == dm and e.sender == BOT and "client profile" in e.content.get("body", ""),
        30,
        "whois",
    )
    assert "CRM id CRM-42" in whois.content["body"] and "tags vip, pension" in whois.content["body"]
    status, body = await api_bridge.call("PATCH", profile_path, token="writer", body={"kyc_status": "maybe"})
    assert status == 400 and body["error"]["field"] == "kyc_status"
    status, body = await api_bridge.call("PATCH", profile_path, token="writer", body={"shoe_size": 44})
    assert status == 400 and body["error"]["field"] == "body"
    status, body = await api_bridge.call("GET", "/clients/telegram/999999999999", token="reader")
    assert status == 404


async def test_writes_share_the_commands_rules_and_audit(
    api_bridge: ApiBridge, employee: Employee, new_client
) -> None:
    client = new_client("Api", "Writer")
    await client.say("hello writer")
    room = (await employee.wait_for_message("hello writer", sender=ghost_of(client))).room_id

    status, body = await api_bridge.call(
        "POST", room_path(room, "/assign"), token="writer", body={"user": OUTSIDER}
    )
    assert status == 403 and body["error"]["rule"] == "join.roles"
    status, body = await api_bridge.call(
        "POST", room_path(room, "/assign"), token="writer", body={"user": ADVISER2}
    )
    assert status == 200
    assert api_bridge.audit("assign")[-2:] == [
        ("api:crm", "deny"),
        ("api:crm", "allow"),
    ]  # the bot command's audit entry
    assert ("api:crm", "allow") in api_bridge.audit("api.assign")
    status, detail = await api_bridge.call("GET", room_path(room), token="reader")
    assert detail["assignee"] == ADVISER2

    status, body = await api_bridge.call(
        "POST", room_path("!unknown:localhost", "/assign"), token="writer", body={"user": ADVISER2}
    )
    assert status == 404 and body["error"]["field"] == "room_id"
    status, body = await api_bridge.call(
        "POST", room_path(room, "/assign"), token="writer", body={"user": "not a user"}
    )
    assert status == 400 and body["error"]["field"] == "user"
    status, body = await api_bridge.call("POST", room_path(room, "/assign"), token="writer", raw=b"{not json")
    assert status == 400 and body["error"]["field"] == "body"
    status, body = await api_bridge.call(
        "POST",
        room_path(room, "/assign"),
        token="writer",
        raw=json.dumps({"user": "@a:b" + "x" * 40_000}).encode(),
    )
    assert status == 413

    status, _ = await api_bridge.call("POST", room_path(room, "/hold"))
    assert status == 200
    status, detail = await api_bridge.call("GET", room_path(room), token="reader")
    assert detail["legal_hold"] is True
    assert ("api:ops", "allow") in api_bridge.audit("hold.place")

    until = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3 * 86400))
    status, body = await api_bridge.call(
        "POST", "/absences", token="writer", body={"user": ADVISER2, "until": "2001-01-01"}
    )
    assert status == 400 and body["error"]["field"] == "until"
    status, body = await api_bridge.call(
        "POST", "/absences", token="writer", body={"user": ADVISER2, "until": until, "cover": EMPLOYEE}
    )
    assert status == 200
    status, body = await api_bridge.call("DELETE", f"/absences/{quote(ADVISER2)}", token="writer")
    assert status == 200
    status, body = await api_bridge.call("DELETE", f"/absences/{quote(ADVISER2)}", token="writer")
    assert status == 404

    status, body = await api_bridge.call(
        "POST", "/outreach/telegram/link", token="writer", body={"on_behalf_of": OUTSIDER}
    )
    assert status == 403 and body["error"]["rule"] == "outreach.allowed_roles"
    status, body = await api_bridge.call(
        "POST", "/outreach/telegram/link", token="writer", body={"on_behalf_of": EMPLOYEE}
    )
    assert (
        status == 200 and body["link"].startswith("https://t.me/") and body["expires_at"] > time.time() * 1000
    )
    status, body = await api_bridge.call(
        "POST",
        "/outreach/whatsapp/template",
        token="writer",
        body={
            "on_behalf_of": EMPLOYEE,
            "number": "+49 155 9988 7766",
            "template": "follow_up",
            "params": ["Pat"],
        },
    )
    assert status == 200 and body["created"] is True
    status, body = await api_bridge.call(
        "POST",
        "/outreach/whatsapp/template",
        token="writer",
        body={
            "on_behalf_of": EMPLOYEE,
            "number": "12ab",
            "template": "follow_up",
        },
    )
    assert status == 400 and "not a phone number" in body["error"]["message"]


def _fuzz(schema_path: Path, base_url: str, token: str, examples: int) -> dict[str, int]:
    """Every operation, positive and negative cases, against the running bridge (in a thread:
    schemathesis' calls are blocking, and the test's event loop serves the sandboxes)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_path(str(schema_path))
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            def run(case) -> None:
                response = case.call(
                    base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                case.validate_response(
                    response,
                    checks=[
                        not_a_server_error,
                        status_code_conformance,
                        content_type_conformance,
                        response_schema_conformance,
                    ],
                )
                counts[op.label] = counts.get(op.label, 0) + 1

            run()
    return counts


async def test_fuzz_every_operation_against_the_document(
    api_bridge: ApiBridge, employee: Employee, new_client
) -> None:
    client = new_client("Fuzz", "Target")
    await client.say("fuzz me")
    await employee.wait_for_message("fuzz me", sender=ghost_of(client))
    t0 = time.monotonic()
    counts = await asyncio.to_thread(
        _fuzz, ROOT / "docs" / "openapi.yaml", api_bridge.url, api_bridge.tokens["admin"], 100
    )
    print(
        f"api fuzz: operations={len(counts)} cases={sum(counts.values())} seconds={time.monotonic() - t0:.1f} per_operation={counts}"
    )
    assert len(counts) == 14 and min(counts.values()) >= 100
    assert "Traceback" not in api_bridge.output
