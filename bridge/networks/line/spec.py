"""LINE as the core sees it: its config section, its secrets and what it can do.

The numbers below are LINE's (developers.line.biz, Messaging API reference and guides); the
connector keeps the per-kind limits itself (bridge.networks.line.media).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.networks.line.config import LineConfig, parse_line
from bridge.networks.spec import BuildContext, Capabilities, NetworkSpec

if TYPE_CHECKING:
    from bridge.networks.base import Connector

#: The largest media a bot may send: video and audio files (images stop at 10 MB).
MAX_UPLOAD_BYTES = 200 * 1024 * 1024

CAPABILITIES = Capabilities(
    max_upload_bytes=MAX_UPLOAD_BYTES,
    # LINE has no pre-approved templates: a push message may be sent at any time, within the
    # account's monthly message quota (checked before each push).
    templates=False,
    # The loading animation (POST /v2/bot/chat/loading/start) is asked for 5 s, its shortest.
    typing_refresh_s=4.0,
    # Pushes carry an X-Line-Retry-Key derived from the Matrix event: sent again, LINE answers
    # 409 with the messages the first request became.
    finds_delivered=True,
    # A bot can neither edit nor unsend what it sent.
    edit_window_s=0,
    delete_window_s=0,
    keeps_undelivered=(
        "it redelivers unanswered webhooks only when webhook redelivery is switched on in the LINE "
        "Developers Console, and then for a limited time; otherwise it keeps nothing"
    ),
)


def _build(config: LineConfig, context: BuildContext) -> Connector:
    from bridge.networks.line.connector import LineConnector

    return LineConnector(config)


SPEC = NetworkSpec(
    name="line",
    display_name="LINE",
    parse_config=parse_line,
    build=_build,
    capabilities=CAPABILITIES,
    secrets=LineConfig.secrets,
    library_loggers=("linebot",),
    requires=(("linebot",), "line"),
    # Messaging API source ids: a user's starts with U, a group's with C, a multi-person chat's
    # with R (the portal of a group or room is keyed by that id, see translate.Source).
    is_group_chat=lambda chat_id: chat_id[:1] in ("C", "R"),
)
