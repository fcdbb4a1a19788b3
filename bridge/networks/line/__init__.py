"""LINE Official Accounts through LINE's Messaging API (webhooks in, API calls out).

The package exports its description (``SPEC``); the connector, and with it line-bot-sdk, is
imported only when the network is built.
"""

from bridge.networks.line.spec import SPEC

__all__ = ["SPEC"]
