"""Join rules across homeservers: the company's homeserver federates with a partner's over
loopback (two real Synapses with TLS). A partner on the allowlist may be brought into a client
conversation, up to the external-party limit; anyone else is refused, and the portal's server
ACL shuts out every server not allowed."""

from __future__ import annotations

import secrets

import pytest
import yaml

from appservice.registration import build_registration, write_registration
from bridge.config import load_config
from bridge.devstack import write_bridge_config
from sandbox.client import SandboxClient
from sandbox.employee import Employee
from sandbox.homeserver import LocalHomeserver, free_port
from sandbox.telegram import TelegramSandbox
from tests.conftest import ROOT, BridgeProcess
from tests.support import eventually


@pytest.fixture(scope="module")
async def federation(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("federation")
    telegram = TelegramSandbox(rate_limits=False)
    await telegram.start()
    a_port, b_port, as_port = free_port("127.0.0.1"), free_port("127.0.0.2"), free_port()
    company = f"127.0.0.1:{a_port}"
    partner_server = f"127.0.0.2:{b_port}"
    policy = yaml.safe_load((ROOT / "tests" / "policy.yaml").read_text())
    text = yaml.safe_dump(policy).replace(":localhost", f":{company}")
    policy = yaml.safe_load(text)
    policy["join"]["allowed_servers"] = [partner_server]
    policy["join"]["max_external"] = 1
    policy["sharing"]["personal_contacts"]["company_domains"] = ["example.com"]
    policy_path = work / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy))

    config_path = write_bridge_config(
        work,
        homeserver_url=f"https://{company}",
        as_port=as_port,
        telegram=telegram,
        invite=[f"@employee:{company}"],
        policy_file=policy_path,
    )
    raw = yaml.safe_load(config_path.read_text())
    raw["homeserver"].update(domain=company, verify_tls=False)
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)
    registration = build_registration(
        as_id=config.appservice.id,
        url=config.appservice.address,
        bot_localpart=config.appservice.bot_localpart,
        domain=company,
        ghost_regex=config.ghost_namer().namespace_regex,
    )
    write_registration(registration, config.appservice.registration)

    a = LocalHomeserver(
        work / "a",
        port=a_port,
        federation_address="127.0.0.1",
        app_service_config_files=[config.appservice.registration],
    )
    b = LocalHomeserver(work / "b", port=b_port, federation_address="127.0.0.2")
    await a.start()
    await b.start()
    people = {}
    for name, hs in (("employee", a), ("admin", a), ("partner", b), ("partner2", b)):
        user = await hs.register_user(name, secrets.token_urlsafe(12))
        person = Employee(
            hs.url,
            user.user_id,
            user.access_token,
            user.device_id,
            auto_join=name == "employee",
            ssl=hs.client_ssl,
        )
        await person.start()
        people[name] = person
    bridge = BridgeProcess(config_path)
    await bridge.start()
    yield {
        "telegram": telegram,
        "a": a,
        "b": b,
        "people": people,
        "bridge": bridge,
        "company": company,
        "partner_server": partner_server,
    }
    print(f"--- bridge output ---\n{bridge.output}")
    assert await bridge.stop() == 0
    for person in people.values():
        await person.close()
    await b.stop()
    await a.stop()
    await telegram.stop()


async def test_partner_server_allowed_up_to_the_limit_others_refused(federation) -> None:
    people, company = federation["people"], federation["company"]
    employee, admin, partner, partner2 = (
        people["employee"],
        people["admin"],
        people["partner"],
        people["partner2"],
    )
    bot = f"@houseline:{company}"
    client = SandboxClient(federation["telegram"].url, 7_900_000_001, "Fed", "Client")
    await client.say("hello across servers")
    msg = await employee.wait_for_message("hello across servers")
    room = msg.room_id

    acl = await employee.client.room_get_state_event(room, "m.room.server_acl")
    assert set(acl.content["allow"]) == {company, "127.0.0.1", federation["partner_server"], "127.0.0.2"}
    assert acl.content["deny"] == [] and acl.content["allow_ip_literals"] is True

    resp = await admin.client.room_create(invite=[bot], is_direct=True)
    dm = resp.room_id

    async def bot_in_dm() -> bool:
        members = await admin.client.joined_members(dm)
        return any(m.user_id == bot for m in getattr(members, "members", []))

    await eventually(bot_in_dm, "the bot to join the admin's chat")

    async def ask(text: str, expect: str) -> str:
        before = {e.event_id for e in admin.events}
        await admin.send_text(dm, text)
        reply = await admin.wait_for_event(
            lambda e: (
                e.room_id == dm
                and e.sender == bot
                and e.event_id not in before
                and expect in e.content.get("body", "")
            ),
            30,
            expect,
        )
        return reply.content["body"]

    stranger = "@someone:127.0.0.3:8448"
    assert "rule join.servers" in await ask(f"!hl assign {room} {stranger}", "Not invited")
    assert "Invited" in await ask(f"!hl assign {room} {partner.user_id}", "Invited")
    await partner.wait_for(lambda: room in partner.invites, 30, "the partner's invite over federation")
    joined = await partner.client.join(room)
    assert getattr(joined, "room_id", None) == room, joined

    async def partner_joined() -> bool:
        members = await employee.client.joined_members(room)
        return partner.user_id in {m.user_id for m in getattr(members, "members", [])}

    await eventually(partner_joined, "the partner to be in the portal")
    assert "rule join.max_external" in await ask(f"!hl assign {room} {partner2.user_id}", "Not invited")

    # The partner stays (allowed), and what they write reaches the client like any answer.
    await partner.send_text(room, "Partner desk here")
    await client.wait_for_text("Partner desk here")
