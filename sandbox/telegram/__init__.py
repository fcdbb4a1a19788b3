"""A local emulator of the Telegram Bot API (the subset Houseline uses) with a client-side
control API, so the bridge's real python-telegram-bot path can be tested without Telegram.

Start one with ``TelegramSandbox(...).start()`` or ``python -m sandbox.telegram``.
"""

from __future__ import annotations

from .server import TelegramSandbox, generate_token

__all__ = ["TelegramSandbox", "generate_token"]
