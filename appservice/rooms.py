"""Room shapes the bridge creates: who holds which power, and the m.bridge state event."""

from __future__ import annotations

from typing import Any

#: The state key prefix of our m.bridge events (MSC2346), one per bridged chat.
BRIDGE_STATE_PREFIX = "net.houseline"


def portal_power_levels() -> dict[str, Any]:
    """Only the bot may invite, kick, ban, redact or change state: employees cannot erase the
    record or reshape the room; everyone in the room may send messages and reactions.

    No ``users`` map: the bot creates the room, and the homeserver gives the creator its power
    the way the room version wants it (power level 100 in ``users`` up to v11; from v12 the
    creator is privileged by the create event and must not be listed).
    """
    return {
        "users_default": 0,
        "events_default": 0,
        "state_default": 100,
        "invite": 100,
        "kick": 100,
        "ban": 100,
        "redact": 100,
        "events": {
            "m.room.name": 100,
            "m.room.topic": 100,
            "m.room.avatar": 100,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 100,
            "m.room.encryption": 100,
            "m.room.server_acl": 100,
            "m.room.tombstone": 100,
            "m.room.redaction": 100,
        },
        "notifications": {"room": 100},
    }


def bridge_state_event(
    *, bot_mxid: str, network: str, network_name: str, account: str, chat_id: str, chat_name: str
) -> dict[str, Any]:
    """The m.bridge state event clients use to show that a room is bridged and to where."""
    return {
        "type": "m.bridge",
        "state_key": f"{BRIDGE_STATE_PREFIX}://{network}/{account}/{chat_id}",
        "content": {
            "bridgebot": bot_mxid,
            "protocol": {"id": network, "displayname": network_name},
            "network": {"id": account, "displayname": network_name},
            "channel": {"id": chat_id, "displayname": chat_name},
        },
    }
