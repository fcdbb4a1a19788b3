"""A network registered from outside the core runs through the real core and Synapse.

The in-memory network of tests/memory_network.py is registered by this test alone: its config
section, its ghosts' namespace, its name in the policy, its secrets and its capabilities all
come from its spec, with no edit to any core module. Telegram is switched off, so the bridge
carries nothing but the plug-in.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

from appservice.registration import build_registration, write_registration
from bridge.bridge import Bridge
from bridge.config import load_config
from bridge.events import ChatRef, DeliveryKind
from bridge.networks import register, unregister
from sandbox.employee import Employee
from sandbox.homeserver import LocalHomeserver, free_port
from tests import memory_network
from tests.memory_network import MemoryConnector

DOMAIN = "localhost"
DISCLAIMER = "This conversation is recorded by Example Advisers."


@pytest.fixture
def memory_registered():
    register(memory_network.SPEC)
    yield memory_network.SPEC
    unregister(memory_network.NAME)


def write_config(workdir: Path, hs_port: int, as_port: int, token: str) -> Path:
    config = {
        "homeserver": {"url": f"http://127.0.0.1:{hs_port}", "domain": DOMAIN},
        "appservice": {"port": as_port, "address": f"http://127.0.0.1:{as_port}"},
        "database": {"url": "sqlite:houseline.db"},
        "networks": {
            "telegram": {"enabled": False},
            "memory": {"enabled": True, "account": "desk", "token": token},
        },
        "portals": {"invite": [f"@employee:{DOMAIN}"], "company": "Example Advisers"},
        "policies": {"disclaimers": {"networks": {"memory": DISCLAIMER}}},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def test_a_registered_network_carries_messages_both_ways(memory_registered, tmp_path: Path) -> None:
    hs_port, as_port, token = free_port(), free_port(), secrets.token_urlsafe(24)
    config = load_config(write_config(tmp_path, hs_port, as_port, token))
    assert list(config.networks) == ["memory"]
    assert token in config.network_secrets()
    # The exclusive namespace covers the plug-in's ghosts, so Synapse lets the bridge make them.
    assert config.ghost_namer().is_ghost("@memory_c1:localhost")
    registration = build_registration(
        as_id=config.appservice.id,
        url=config.appservice.address,
        bot_localpart=config.appservice.bot_localpart,
        domain=DOMAIN,
        ghost_regex=config.ghost_namer().namespace_regex,
        existing=config.appservice.registration,
    )
    write_registration(registration, config.appservice.registration)
    homeserver = LocalHomeserver(
        tmp_path / "synapse",
        server_name=DOMAIN,
        port=hs_port,
        app_service_config_files=[config.appservice.registration],
    )
    await homeserver.start()
    bridge = Bridge(config, registration)
    employee: Employee | None = None
    try:
        user = await homeserver.register_user(
            "employee", secrets.token_urlsafe(12), displayname="Erin Employee"
        )
        employee = Employee(homeserver.url, user.user_id, user.access_token, user.device_id, auto_join=True)
        await employee.start()
        await bridge.start()
        connector = bridge.connectors["memory"]
        assert isinstance(connector, MemoryConnector)

        # Inbound: the client's message is in a portal, from the client's ghost.
        await connector.client_says("c1", "Mia Memory", "Hello from the memory network")
        msg = await employee.wait_for_message("Hello from the memory network", sender="@memory_c1:localhost")
        # The policy knew the network's name: its disclaimer went to the client first.
        first = await connector.wait_for_send(lambda d: d.kind is DeliveryKind.MESSAGE)
        assert first.text is not None and first.text.body == DISCLAIMER

        # Outbound: the employee's answer leaves through outbox -> outbound -> the connector.
        answer_id = await employee.send_text(msg.room_id, "Hi Mia, how can I help?")
        delivery = await connector.wait_for_send(lambda d: d.event_id == answer_id)
        assert delivery.chat == ChatRef("memory", "desk", "c1")
        assert delivery.text is not None and delivery.text.body == "Hi Mia, how can I help?"
        assert delivery.signature.startswith("Erin Employee")

        # The declared capabilities are read by the core: an edit is refused in the room
        # without reaching the connector (the network has no edit window).
        sent_before = len(connector.sent)
        await employee.send_event(
            msg.room_id,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "* Hi Mia!",
                "m.new_content": {"msgtype": "m.text", "body": "Hi Mia!"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": delivery.event_id},
            },
        )
        refusal = await employee.wait_for_event(
            lambda e: (
                e.room_id == msg.room_id and "does not let a business edit" in e.content.get("body", "")
            ),
            30,
            "the edit's refusal",
        )
        assert refusal.content["body"].startswith("Not delivered to the client: Memory does not let")
        assert len(connector.sent) == sent_before
    finally:
        await bridge.stop()
        if employee is not None:
            await employee.close()
        await homeserver.stop()
