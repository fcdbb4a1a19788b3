"""WhatsApp Business through Meta's Cloud API (webhooks in, Graph API out)."""

from bridge.networks.whatsapp.connector import WhatsAppConnector

__all__ = ["WhatsAppConnector"]
