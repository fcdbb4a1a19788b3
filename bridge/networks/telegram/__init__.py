"""Telegram through the Bot API (python-telegram-bot), the only package that imports ``telegram``.

The package exports its description (``SPEC``); the connector is imported when it is built.
"""

from bridge.networks.telegram.spec import SPEC

__all__ = ["SPEC"]
