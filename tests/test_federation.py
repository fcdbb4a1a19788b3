"""Two sandbox Synapses federating over loopback (``LocalHomeserver(federation_address=...)``).

Server A is ``127.0.0.1:<port>``, server B is ``127.0.0.2:<port>``; both are started once
for the module, concurrently (about two seconds together), and stopped at the end. Tests
that need a room make their own, so they do not depend on each other's order.

Every wait is a poll of an observable condition under a deadline (``_eventually``); the
one negative check (an event that must *not* reach A) first waits for positive proof that
A has already answered for that event, instead of sleeping and hoping.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from nio import AsyncClient, LoginResponse

from sandbox.homeserver import HomeserverError, LocalHomeserver, RegisteredUser, free_port

ADDRESS_A = "127.0.0.1"
ADDRESS_B = "127.0.0.2"
AS_ID = "houseline-federation-test"
WAIT = 20.0  # upper bound for anything federation has to deliver over loopback


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """A user's client-server API on one homeserver, over the server's pinned TLS."""

    hs: LocalHomeserver
    user: RegisteredUser

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        return await _call(self.hs, method, path, self.user.access_token, body)

    async def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, data = await self.call(method, path, body)
        assert status == 200, (method, path, status, data)
        return data

    async def create_room(self, invite: list[str]) -> str:
        data = await self.ok(
            "POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat", "invite": invite}
        )
        return str(data["room_id"])

    async def join_via(self, room_id: str, server_name: str) -> None:
        query = f"server_name={quote(server_name)}"
        await self.ok("POST", f"/_matrix/client/v3/join/{quote(room_id)}?{query}", {})

    async def send_text(self, room_id: str, body: str) -> str:
        txn = secrets.token_hex(8)
        data = await self.ok(
            "PUT",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": body},
        )
        return str(data["event_id"])

    async def event(self, room_id: str, event_id: str) -> tuple[int, dict[str, Any]]:
        return await self.call("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(event_id)}")

    async def timeline_ids(self, room_id: str) -> set[str]:
        data = await self.ok("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=100")
        return {str(e["event_id"]) for e in data["chunk"]}


async def _call(
    hs: LocalHomeserver,
    method: str,
    path: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.request(
            method, f"{hs.url}{path}", json=body, headers=headers, ssl=hs.client_ssl
        ) as resp:
            return resp.status, await resp.json(content_type=None)


async def _eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _arrived(client: Client, room_id: str, event_id: str) -> dict[str, Any]:
    """Wait until ``event_id`` is readable through ``client``'s homeserver; return it."""

    async def check() -> dict[str, Any] | None:
        status, data = await client.event(room_id, event_id)
        return data if status == 200 else None

    return await _eventually(check, f"{event_id} on {client.hs.server_name}")


def _can_bind(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registration(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An appservice registration for server A (a federating server must accept one too)."""
    path = tmp_path_factory.mktemp("appservice") / "registration.yaml"
    data: dict[str, Any] = {
        "id": AS_ID,
        "url": f"http://127.0.0.1:{free_port()}",  # nothing listens: client side only
        "as_token": secrets.token_hex(16),
        "hs_token": secrets.token_hex(16),
        "sender_localpart": "houseline_bot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": r"@test_.*:127\.0\.0\.1:.*"}],
            "aliases": [],
            "rooms": [],
        },
        "rate_limited": False,
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path, data


@pytest.fixture(scope="module")
async def servers(
    tmp_path_factory: pytest.TempPathFactory, registration: tuple[Path, dict[str, Any]]
) -> AsyncIterator[tuple[LocalHomeserver, LocalHomeserver]]:
    if not _can_bind(ADDRESS_B):
        pytest.skip(f"{ADDRESS_B} is not a usable loopback address on this host")
    root = tmp_path_factory.mktemp("federation")
    a = LocalHomeserver(root / "a", federation_address=ADDRESS_A, app_service_config_files=[registration[0]])
    b = LocalHomeserver(root / "b", federation_address=ADDRESS_B)
    try:
        # Concurrently: the two start-ups are independent and each costs ~2 s.
        results = await asyncio.gather(a.start(timeout=60), b.start(timeout=60), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        yield a, b
    finally:
        await asyncio.gather(a.stop(), b.stop())


@pytest.fixture(scope="module")
async def alice(servers: tuple[LocalHomeserver, LocalHomeserver]) -> Client:
    a, _ = servers
    return Client(a, await a.register_user("alice", "alice-password"))


@pytest.fixture(scope="module")
async def bob(servers: tuple[LocalHomeserver, LocalHomeserver]) -> Client:
    """Admin on B: the ACL test reads B's federation-destination admin API."""
    _, b = servers
    return Client(b, await b.register_user("bob", "bob-password", admin=True))


async def _shared_room(alice: Client, bob: Client) -> str:
    """A room on A that Bob (on B) has joined through A."""
    room_id = await alice.create_room(invite=[bob.user.user_id])
    await bob.join_via(room_id, alice.hs.server_name)
    return room_id


# --------------------------------------------------------------------------------------
# construction (no server started)
# --------------------------------------------------------------------------------------


def test_rejects_non_loopback_or_non_ip_address(tmp_path: Path) -> None:
    for bad in ("10.0.0.1", "::1", "localhost", "127.0.0.1:8448"):
        with pytest.raises(ValueError, match="federation_address"):
            LocalHomeserver(tmp_path, federation_address=bad)


def test_rejects_explicit_server_name_with_federation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="server_name"):
        LocalHomeserver(tmp_path, server_name="example.org", federation_address=ADDRESS_B)


def test_name_and_url_before_start(tmp_path: Path) -> None:
    unported = LocalHomeserver(tmp_path / "x", federation_address=ADDRESS_B)
    with pytest.raises(HomeserverError, match="start"):
        _ = unported.server_name
    with pytest.raises(HomeserverError, match="start"):
        _ = unported.client_ssl
    ported = LocalHomeserver(tmp_path / "y", port=8482, federation_address=ADDRESS_B)
    assert ported.server_name == "127.0.0.2:8482"
    assert ported.url == "https://127.0.0.2:8482"
    assert ported.federation_address == ADDRESS_B


# --------------------------------------------------------------------------------------
# the running pair
# --------------------------------------------------------------------------------------


async def test_servers_are_tls_on_their_own_addresses(
    servers: tuple[LocalHomeserver, LocalHomeserver],
) -> None:
    for hs, address in zip(servers, (ADDRESS_A, ADDRESS_B)):
        assert hs.server_name == f"{address}:{hs.port}"
        assert hs.url == f"https://{address}:{hs.port}"
        config = yaml.safe_load(hs.config_path.read_text(encoding="utf-8"))
        (listener,) = config["listeners"]
        assert listener["tls"] is True and listener["bind_addresses"] == [address]
        assert listener["resources"][0]["names"] == ["client", "federation"]
        assert config["federation_verify_certificates"] is False
        assert config["trusted_key_servers"] == []
        key_path = Path(config["tls_private_key_path"])
        assert key_path.stat().st_mode & 0o077 == 0
        assert hs.tls_certificate_path == Path(config["tls_certificate_path"])

        context = hs.client_ssl
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        status, body = await _call(hs, "GET", "/_matrix/federation/v1/version")
        assert status == 200 and body["server"]["name"] == "Synapse"

    # The pinned context trusts only its own server's certificate.
    a, b = servers
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{b.url}/_matrix/client/versions", ssl=a.client_ssl)


async def test_appservice_on_federating_server(
    servers: tuple[LocalHomeserver, LocalHomeserver], registration: tuple[Path, dict[str, Any]]
) -> None:
    a, _ = servers
    as_token = str(registration[1]["as_token"])
    status, body = await _call(
        a,
        "POST",
        "/_matrix/client/v3/register",
        as_token,
        {"type": "m.login.application_service", "username": "test_ghost"},
    )
    assert status == 200, body
    assert body["user_id"] == f"@test_ghost:{a.server_name}"


async def test_matrix_nio_client_over_pinned_tls(
    servers: tuple[LocalHomeserver, LocalHomeserver],
) -> None:
    _, b = servers
    await b.register_user("nina", "nina-password")
    client = AsyncClient(b.url, f"@nina:{b.server_name}", ssl=b.client_ssl)
    try:
        response = await asyncio.wait_for(client.login("nina-password"), timeout=15)
        assert isinstance(response, LoginResponse), response
        assert response.user_id == f"@nina:{b.server_name}"
    finally:
        await client.close()


async def test_remote_user_joins_and_message_reaches_origin(alice: Client, bob: Client) -> None:
    room_id = await alice.create_room(invite=[bob.user.user_id])
    # The invite is delivered synchronously over federation: B already knows the room.
    await bob.join_via(room_id, alice.hs.server_name)

    async def bob_joined_on_a() -> bool:
        status, data = await alice.call(
            "GET",
            f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/{quote(bob.user.user_id)}",
        )
        return status == 200 and data.get("membership") == "join"

    await _eventually(bob_joined_on_a, "bob's join in A's room state")

    event_id = await bob.send_text(room_id, "hello from B")
    event = await _arrived(alice, room_id, event_id)
    assert event["sender"] == bob.user.user_id
    assert event["content"] == {"msgtype": "m.text", "body": "hello from B"}
    assert event_id in await alice.timeline_ids(room_id)

    # And the other way round.
    reply_id = await alice.send_text(room_id, "hello from A")
    reply = await _arrived(bob, room_id, reply_id)
    assert reply["content"]["body"] == "hello from A"


async def test_server_acl_makes_origin_drop_denied_servers_events(alice: Client, bob: Client) -> None:
    """Observed with Synapse 1.163: B's send *succeeds* (B creates and stores the event; the
    ACL is enforced by the receiving server, not the sender), A answers B's transaction
    with a per-event 403 "Server is banned from room" and never stores the event. So the
    observable is: 200 on B, readable on B, 404 on A and absent from A's timeline."""
    a = alice.hs
    room_id = await _shared_room(alice, bob)
    first = await bob.send_text(room_id, "before the ACL")
    await _arrived(alice, room_id, first)

    # ACLs match the host without the port; the IP-literal names must stay allowed for A.
    acl = {"allow": ["*"], "deny": [ADDRESS_B], "allow_ip_literals": True}
    acl_id = (
        await alice.ok("PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.server_acl/", acl)
    )["event_id"]
    # A's own events still flow to B: only what B sends to A is refused.
    await _arrived(bob, room_id, acl_id)

    destination = quote(a.server_name, safe="")
    admin = f"/_synapse/admin/v1/federation/destinations/{destination}"

    async def queued_for_a() -> int | None:
        data = await bob.ok("GET", f"{admin}/rooms")
        orderings = [r["stream_ordering"] for r in data["rooms"] if r["room_id"] == room_id]
        return orderings[0] if orderings else None

    before = await queued_for_a()
    assert before is not None

    denied = await bob.send_text(room_id, "after the ACL")  # 200: B does not refuse it

    # Positive proof that A has answered for the denied event before checking its absence:
    # B records the room's newest PDU for A when it queues it, and the stream position of
    # the last transaction A acknowledged.
    async def newer_queued() -> int | None:
        ordering = await queued_for_a()
        return ordering if ordering is not None and ordering > before else None

    target = await _eventually(newer_queued, "B to queue the denied event for A")

    async def acknowledged() -> bool:
        data = await bob.ok("GET", admin)
        last = data["last_successful_stream_ordering"]
        return last is not None and last >= target

    await _eventually(acknowledged, "A to answer B's transaction with the denied event")

    status, body = await alice.event(room_id, denied)
    assert status == 404, body
    assert body["errcode"] == "M_NOT_FOUND"
    assert denied not in await alice.timeline_ids(room_id)
    # B's own view keeps it: the room has split, which is what an ACL'd server sees.
    status, _ = await bob.event(room_id, denied)
    assert status == 200
    assert denied in await bob.timeline_ids(room_id)


async def test_restart_keeps_name_and_certificate(
    servers: tuple[LocalHomeserver, LocalHomeserver], bob: Client
) -> None:
    _, b = servers
    name, url, context = b.server_name, b.url, b.client_ssl
    assert b.tls_certificate_path is not None
    cert = b.tls_certificate_path.read_bytes()

    await b.restart()

    assert (b.server_name, b.url) == (name, url)
    assert b.tls_certificate_path.read_bytes() == cert
    assert b.client_ssl is context  # clients holding the old context keep working
    data = await bob.ok("GET", "/_matrix/client/v3/account/whoami")
    assert data["user_id"] == bob.user.user_id
