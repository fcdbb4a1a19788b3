"""Webhook payloads in the exact nesting of Meta's ``messages`` webhook reference:
``{"object": "whatsapp_business_account", "entry": [{"id": <WABA id>, "changes": [{"value":
{...}, "field": "messages"}]}]}`` with ``value`` holding ``messaging_product``, ``metadata`` and
either ``contacts`` + ``messages`` (something the user sent) or ``statuses`` (what happened to
something the business sent). The sandbox puts one message or one status in each payload.
"""

from __future__ import annotations

import copy
from typing import Any

from .state import Chat, Client, SandboxNumber, StoredMessage


def _envelope(waba_id: str, number: SandboxNumber, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": waba_id,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": number.digits,
                                "phone_number_id": number.phone_number_id,
                            },
                            **value,
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def message_payload(
    waba_id: str, number: SandboxNumber, client: Client, message: dict[str, Any]
) -> dict[str, Any]:
    return _envelope(
        waba_id,
        number,
        {
            "contacts": [{"profile": {"name": client.name}, "wa_id": client.wa_id}],
            "messages": [message],
        },
    )


def status_payload(waba_id: str, number: SandboxNumber, status: dict[str, Any]) -> dict[str, Any]:
    return _envelope(waba_id, number, {"statuses": [status]})


def inbound_object(chat: Chat, message: StoredMessage) -> dict[str, Any]:
    """``messages[0]`` for something the client sent (as stored)."""
    obj: dict[str, Any] = {}
    if message.context_id is not None:
        obj["context"] = {"from": message.context_from, "id": message.context_id}
    obj.update(
        {
            "from": chat.client.wa_id,
            "id": message.id,
            "timestamp": str(message.timestamp),
            "type": message.type,
        }
    )
    if message.type == "unsupported":
        obj["errors"] = copy.deepcopy(message.extra["errors"])
    else:
        obj[message.type] = copy.deepcopy(message.content)
    return obj


def edit_object(chat: Chat, original: StoredMessage, edit_id: str, timestamp: int) -> dict[str, Any]:
    """``type: "edit"`` (Meta's "Edit messages webhook reference")."""
    inner: dict[str, Any] = {}
    if original.context_id is not None:
        # guess: the reference's syntax opens ``edit.message`` with ``context``; the sandbox
        # repeats the original's reply context there and omits it for non-replies.
        inner["context"] = {"from": original.context_from, "id": original.context_id}
    inner["type"] = original.type
    inner[original.type] = copy.deepcopy(original.content)
    return {
        "from": chat.client.wa_id,
        "id": edit_id,
        "timestamp": str(timestamp),
        "type": "edit",
        "edit": {"original_message_id": original.id, "message": inner},
    }


def revoke_object(chat: Chat, original: StoredMessage, revoke_id: str, timestamp: int) -> dict[str, Any]:
    """``type: "revoke"`` (Meta's "Revoke messages webhook reference")."""
    return {
        "from": chat.client.wa_id,
        "id": revoke_id,
        "timestamp": str(timestamp),
        "type": "revoke",
        "revoke": {"original_message_id": original.id},
    }


def status_object(
    chat: Chat,
    message: StoredMessage,
    status: str,
    timestamp: int,
    *,
    errors: list[dict[str, Any]] | None = None,
    category: str = "service",
    free: bool = True,
) -> dict[str, Any]:
    """One entry of ``statuses``: ``id``, ``status``, ``timestamp`` (string), ``recipient_id``,
    then ``conversation``/``pricing`` for billable states or ``errors`` for ``failed``."""
    obj: dict[str, Any] = {
        "id": message.id,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": chat.client.wa_id,
    }
    if message.biz_opaque_callback_data is not None:
        obj["biz_opaque_callback_data"] = message.biz_opaque_callback_data
    if status == "failed":
        obj["errors"] = copy.deepcopy(errors or [])
        return obj
    # guess: the (pre-2025) conversation object is kept beside per-message pricing (PMP, as
    # Meta bills since July 2025); bridges should treat both as informational.
    conversation: dict[str, Any] = {"id": chat.conversation_id, "origin": {"type": category}}
    if status == "sent":
        conversation["expiration_timestamp"] = str(chat.conversation_expires)
    obj["conversation"] = conversation
    obj["pricing"] = {
        "billable": not free,
        "pricing_model": "PMP",
        "category": category,
        "type": "free_customer_service" if free else "regular",
    }
    return obj
