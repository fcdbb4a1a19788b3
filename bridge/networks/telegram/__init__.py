"""Telegram through the Bot API (python-telegram-bot). The only place that imports ``telegram``."""

from bridge.networks.telegram.connector import TelegramConnector

__all__ = ["TelegramConnector"]
