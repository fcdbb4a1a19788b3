"""Tests for sandbox.homeserver: the throwaway Synapse every integration test stands on.

One homeserver is started for the whole module (a start costs seconds); the restart test
restarts that same instance, and the stop test stops it. A function-scoped wrapper starts
it again if an earlier test left it stopped, so the tests do not depend on their order.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from sandbox.homeserver import HomeserverError, LocalHomeserver, free_port

AS_ID = "houseline-test"


def _write_registration(path: Path) -> dict[str, object]:
    registration: dict[str, object] = {
        "id": AS_ID,
        # Nothing listens there: these tests only exercise the client-server side.
        "url": f"http://127.0.0.1:{free_port()}",
        "as_token": secrets.token_hex(16),
        "hs_token": secrets.token_hex(16),
        "sender_localpart": "houseline_bot",
        "namespaces": {
            "users": [{"exclusive": True, "regex": "@test_.*:localhost"}],
            "aliases": [],
            "rooms": [],
        },
        "rate_limited": False,
    }
    path.write_text(yaml.safe_dump(registration), encoding="utf-8")
    return registration


@pytest.fixture(scope="module")
def registration_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("appservice") / "registration.yaml"


@pytest.fixture(scope="module")
def registration(registration_path: Path) -> dict[str, object]:
    return _write_registration(registration_path)


@pytest.fixture(scope="module")
async def module_homeserver(
    tmp_path_factory: pytest.TempPathFactory,
    registration_path: Path,
    registration: dict[str, object],
) -> AsyncIterator[LocalHomeserver]:
    hs = LocalHomeserver(
        tmp_path_factory.mktemp("synapse"),
        app_service_config_files=[registration_path],
    )
    await hs.start(timeout=60)
    try:
        yield hs
    finally:
        await hs.stop()


@pytest.fixture
async def hs(module_homeserver: LocalHomeserver) -> LocalHomeserver:
    if not module_homeserver.running:
        await module_homeserver.start(timeout=60)
    return module_homeserver


async def _whoami(hs: LocalHomeserver, token: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(
            f"{hs.url}/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            return resp.status, await resp.json()


async def _as_register(hs: LocalHomeserver, as_token: str, username: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(
            f"{hs.url}/_matrix/client/v3/register",
            json={"type": "m.login.application_service", "username": username},
            headers={"Authorization": f"Bearer {as_token}"},
        ) as resp:
            return resp.status, await resp.json()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_versions_answers(hs: LocalHomeserver) -> None:
    assert hs.url == f"http://127.0.0.1:{hs.port}"
    assert hs.server_name == "localhost"
    # Plain mode is HTTP: no federation, nothing for clients to configure.
    assert hs.federation_address is None
    assert hs.client_ssl is None and hs.tls_certificate_path is None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{hs.url}/_matrix/client/versions") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["versions"]
    assert hs.log_path.exists()


async def test_runs_in_own_process_group(hs: LocalHomeserver) -> None:
    assert hs.pid is not None
    assert os.getpgid(hs.pid) == hs.pid != os.getpgid(0)


async def test_register_user_returns_working_token(hs: LocalHomeserver) -> None:
    user = await hs.register_user("alice", "alice-password")
    assert user.user_id == "@alice:localhost"
    assert user.device_id and user.password == "alice-password"
    assert user.access_token not in repr(user)
    status, body = await _whoami(hs, user.access_token)
    assert status == 200
    assert body["user_id"] == "@alice:localhost"


async def test_register_admin_user(hs: LocalHomeserver) -> None:
    admin = await hs.register_user("boss", "boss-password", admin=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(
            f"{hs.url}/_synapse/admin/v2/users/{admin.user_id}",
            headers={"Authorization": f"Bearer {admin.access_token}"},
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["admin"] is True


async def test_register_duplicate_user_raises(hs: LocalHomeserver) -> None:
    await hs.register_user("dupe", "pw")
    with pytest.raises(HomeserverError, match="M_USER_IN_USE"):
        await hs.register_user("dupe", "pw")


async def test_appservice_registers_ghost_only_in_namespace(
    hs: LocalHomeserver, registration: dict[str, object]
) -> None:
    as_token = str(registration["as_token"])
    status, body = await _as_register(hs, as_token, "test_x")
    assert status == 200, body
    assert body["user_id"] == "@test_x:localhost"

    status, body = await _as_register(hs, as_token, "outsider")
    assert status == 400
    assert body["errcode"] == "M_EXCLUSIVE"


async def test_written_config(hs: LocalHomeserver, registration_path: Path) -> None:
    config = yaml.safe_load(hs.config_path.read_text(encoding="utf-8"))
    assert "redaction_retention_period" in config
    assert config["redaction_retention_period"] is None
    assert config["enable_registration"] is False
    assert config["trusted_key_servers"] == []
    assert config["app_service_config_files"] == [str(registration_path.resolve())]
    assert config["listeners"][0]["bind_addresses"] == ["127.0.0.1"]
    assert config["rc_message"]["per_second"] >= 1000
    # The config holds the registration shared secret.
    assert hs.config_path.stat().st_mode & 0o077 == 0


async def test_restart_keeps_user(hs: LocalHomeserver) -> None:
    user = await hs.register_user("carol", "carol-password")
    old_pid = hs.pid
    assert old_pid is not None
    old_url = hs.url

    await hs.restart()

    assert not _group_alive(old_pid)
    assert hs.pid is not None and hs.pid != old_pid
    assert hs.url == old_url
    status, body = await _whoami(hs, user.access_token)
    assert status == 200 and body["user_id"] == user.user_id
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(
            f"{hs.url}/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "carol"},
                "password": "carol-password",
            },
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["user_id"] == user.user_id


async def test_stop_leaves_no_process(hs: LocalHomeserver) -> None:
    pid = hs.pid
    assert pid is not None and _group_alive(pid)
    await hs.stop()
    assert hs.pid is None and not hs.running
    assert not _group_alive(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    await hs.stop()  # idempotent


async def test_early_death_reports_log_tail(tmp_path: Path) -> None:
    # An invalid listener makes Synapse exit while parsing its config, before it binds.
    broken = LocalHomeserver(tmp_path / "broken", extra_config={"listeners": [{"port": "x"}]})
    with pytest.raises(HomeserverError, match="exited during start-up") as info:
        await broken.start(timeout=30)
    assert "synapse.console.log" in str(info.value)
    assert broken.pid is None
