"""WhatsApp Business through Meta's Cloud API (webhooks in, Graph API out).

The package exports its description (``SPEC``); the connector is imported when it is built.
"""

from bridge.networks.whatsapp.spec import SPEC

__all__ = ["SPEC"]
