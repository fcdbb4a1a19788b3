"""A local emulator of Meta's WhatsApp Cloud API (the subset Houseline uses) with a
client-side control API, so the bridge's WhatsApp connector can be tested without Meta.

Start one with ``WhatsAppSandbox(...).start()`` or ``python -m sandbox.whatsapp``.
"""

from __future__ import annotations

from .server import WhatsAppSandbox
from .state import SandboxNumber
from .templates import Template, default_templates
from .webhooks import WebhookSubscriptionError, signature

__all__ = [
    "SandboxNumber",
    "Template",
    "WebhookSubscriptionError",
    "WhatsAppSandbox",
    "default_templates",
    "signature",
]
