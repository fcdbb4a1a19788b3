"""Telegram as the core sees it: its config section, its secrets and what it can do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.networks.spec import BuildContext, Capabilities, NetworkSpec
from bridge.networks.telegram.config import TelegramConfig, parse_telegram

if TYPE_CHECKING:
    from bridge.networks.base import Connector

CAPABILITIES = Capabilities(
    # The Bot API's upload limit for bots on Telegram's own servers.
    max_upload_bytes=50 * 1024 * 1024,
    templates=False,
    # A chat action shows for about 5 s.
    typing_refresh_s=4.0,
    # editMessageReplyMarkup tells whether a message id is the bot's (see Sender.find_delivered).
    finds_delivered=True,
    # A bot may edit its own messages at any time, and delete them within 48 hours.
    edit_window_s=None,
    keeps_undelivered="it keeps undelivered updates for 24 hours",
    delete_window_s=48 * 3600,
)


def _build(config: TelegramConfig, context: BuildContext) -> Connector:
    from bridge.networks.telegram.connector import TelegramConnector

    # The record's message ids: crash settlement probes the ids after the highest one mapped.
    return TelegramConnector(config, mapped_ids=context.mapped_ids)


SPEC = NetworkSpec(
    name="telegram",
    display_name="Telegram",
    parse_config=parse_telegram,
    build=_build,
    capabilities=CAPABILITIES,
    secrets=TelegramConfig.secrets,
    library_loggers=("telegram",),
    requires=(("telegram",), "telegram"),
    # Bot API chat ids: users are positive, groups, supergroups and channels negative.
    is_group_chat=lambda chat_id: chat_id.startswith("-"),
)
