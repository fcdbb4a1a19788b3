"""WhatsApp as the core sees it: its config section, its secrets and what it can do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.networks.spec import BuildContext, Capabilities, NetworkSpec
from bridge.networks.whatsapp.config import WhatsAppConfig, parse_whatsapp

if TYPE_CHECKING:
    from bridge.networks.base import Connector

CAPABILITIES = Capabilities(
    # The Cloud API's largest media (documents); smaller kinds are checked by the connector.
    max_upload_bytes=100 * 1024 * 1024,
    # Outside the 24-hour window only approved templates reach the client.
    templates=True,
    typing_refresh_s=4.0,
    # A business cannot list what it sent: a send interrupted by a crash is sent again.
    finds_delivered=False,
    # The Cloud API has no edit or delete for a business's messages.
    edit_window_s=0,
    keeps_undelivered="it retries webhooks for up to 7 days",
    delete_window_s=0,
)


def _build(config: WhatsAppConfig, context: BuildContext) -> Connector:
    from bridge.networks.whatsapp.connector import WhatsAppConnector

    # The record knows when each client last wrote: the 24-hour window survives restarts.
    return WhatsAppConnector(config, last_inbound=context.last_inbound)


SPEC = NetworkSpec(
    name="whatsapp",
    display_name="WhatsApp",
    parse_config=parse_whatsapp,
    build=_build,
    capabilities=CAPABILITIES,
    secrets=WhatsAppConfig.secrets,
)
