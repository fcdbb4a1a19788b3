"""``networks.telegram``: the company's bot (and the Telegram Business accounts it serves).

Parsed with the core's reader, so every problem names its key path and the fix. Plain data:
nothing here imports python-telegram-bot, so checking a config stays quick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bridge.networks.spec import ConfigContext
from policies.reader import SECRET_HOWTO as _SECRET_HOWTO
from policies.reader import ConfigReader, value_kind

PREFIX = "networks.telegram"
_KEYS = ("enabled", "bot_token", "polling", "base_url", "base_file_url", "webhook", "pacing")
_BOT_TOKEN_RE = re.compile(r"^[0-9]+:[A-Za-z0-9_-]{20,}$")
#: setWebhook's own rule for secret_token, checked here so a bad one fails at start, not at setWebhook.
_WEBHOOK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
#: A literal aiohttp route: no '{' (a route variable), no '?' or '#', no spaces.
_WEBHOOK_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_WEBHOOK_KEYS = ("enabled", "public_url", "listen_host", "listen_port", "path", "secret_token")
#: The only ports Telegram delivers webhooks to.
_WEBHOOK_PORTS = (443, 80, 88, 8443)
#: Hosts for which a plain-http public_url is accepted: the local sandbox, never Telegram.
_WEBHOOK_HTTP_HOSTS = ("127.0.0.1", "localhost")
HINTS = {
    "networks.telegram.bot_token": "set it to the token @BotFather gave your company's bot (123456:ABC-...)",
    "networks.telegram.webhook.public_url": (
        "set it to the https URL Telegram should POST updates to, e.g. https://bridge.example.com/telegram/webhook"
    ),
    "networks.telegram.webhook.secret_token": f"it is required with enabled: true; {_SECRET_HOWTO}",
}


@dataclass(frozen=True)
class TelegramWebhookConfig:
    """Receiving updates by webhook. Only built when ``webhook.enabled`` is true, so the
    connector's test is simply ``config.webhook is not None``; otherwise it long-polls."""

    #: The https URL Telegram POSTs to (usually a TLS reverse proxy in front of the listener).
    public_url: str
    listen_host: str
    listen_port: int
    path: str
    #: Sent by Telegram in ``X-Telegram-Bot-Api-Secret-Token``; kept out of repr so a logged
    #: config never shows it.
    secret_token: str = field(repr=False)


@dataclass(frozen=True)
class TelegramConfig:
    bot_token: str = field(repr=False)
    polling_timeout: int = 30
    base_url: str | None = None
    base_file_url: str | None = None
    #: None means long polling (the default).
    webhook: TelegramWebhookConfig | None = None
    #: Keep to Telegram's send limits before sending (the default); False only for a Bot API
    #: server without them (a test server), 429s are honoured either way.
    pacing: bool = True

    def secrets(self) -> tuple[str, ...]:
        return (self.bot_token, *((self.webhook.secret_token,) if self.webhook else ()))


def parse_telegram(r: ConfigReader, context: ConfigContext) -> TelegramConfig | None:
    """On unless ``enabled: false`` (a bridge is usually set up for its bot first); the keys
    are checked either way, so a mistake shows up before the day someone turns it on."""
    r.hints.update(HINTS)
    section = r.get(PREFIX, {})
    if isinstance(section, dict):
        for key in section:
            if key not in _KEYS:
                r.unknown_key(f"{PREFIX}.{key}", str(key), tuple(_KEYS))
    enabled = r.boolean(f"{PREFIX}.enabled", True)
    bot_token = r.string(f"{PREFIX}.bot_token") if enabled else r.string(f"{PREFIX}.bot_token", "")
    if enabled and bot_token and "REPLACE" in bot_token:
        r.problems.append(
            f"{PREFIX}.bot_token: still the placeholder from config.example.yaml; "
            "put the token @BotFather gave your company's bot here"
        )
    elif enabled and bot_token and not _BOT_TOKEN_RE.fullmatch(bot_token):
        r.problems.append(
            f"{PREFIX}.bot_token: does not look like a bot token; "
            "it is '<digits>:<letters>' as @BotFather gives it, e.g. 123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
        )
    polling_timeout = r.integer(f"{PREFIX}.polling.timeout", 30, low=0, high=50)
    pacing = r.boolean(f"{PREFIX}.pacing", True)
    base_url = r.url(f"{PREFIX}.base_url", "")
    base_file_url = r.url(f"{PREFIX}.base_file_url", "")
    webhook = _parse_webhook(r, context.appservice_port)
    if not enabled:
        return None
    return TelegramConfig(
        bot_token=bot_token or "",
        polling_timeout=polling_timeout if polling_timeout is not None else 30,
        base_url=base_url or None,
        base_file_url=base_file_url or (f"{base_url.removesuffix('/bot')}/file/bot" if base_url else None),
        webhook=webhook,
        pacing=pacing is not False,
    )


def _parse_webhook(r: ConfigReader, appservice_port: int | None) -> TelegramWebhookConfig | None:
    """``networks.telegram.webhook``: None unless enabled. The keys are checked even when the
    webhook is disabled, so a mistake shows up before the day someone turns it on."""
    prefix = "networks.telegram.webhook"
    networks = r.data.get("networks")
    telegram = networks.get("telegram") if isinstance(networks, dict) else None
    if not isinstance(telegram, dict):
        return None  # a non-mapping networks/telegram is already reported by the other keys
    section = telegram.get("webhook")
    if section is None:
        return None
    if not isinstance(section, dict):
        r.problems.append(
            f"{prefix}: expected a mapping of keys, got {value_kind(section)}; write the webhook keys "
            "indented under 'webhook:' (see config.example.yaml), or leave it out for long polling"
        )
        return None
    for key in section:
        if key not in _WEBHOOK_KEYS:
            r.unknown_key(f"{prefix}.{key}", str(key), tuple(_WEBHOOK_KEYS))

    enabled = r.boolean(f"{prefix}.enabled", False)
    public_url = r.string(f"{prefix}.public_url") if enabled else r.string(f"{prefix}.public_url", "")
    if public_url:
        public_url = _check_webhook_url(r, f"{prefix}.public_url", public_url)
    listen_host = r.string(f"{prefix}.listen_host", "127.0.0.1")
    listen_port = r.integer(f"{prefix}.listen_port", 29341, low=1, high=65535)
    if listen_port is not None and listen_port == appservice_port:
        r.problems.append(
            f"{prefix}.listen_port: {listen_port} is also appservice.port; the webhook needs a port of "
            f"its own, e.g. {listen_port + 1 if listen_port < 65535 else listen_port - 1}"
        )
    path = r.string(f"{prefix}.path", "/telegram/webhook")
    if path and not path.startswith("/"):
        r.problems.append(f"{prefix}.path: '{path}' must start with '/', e.g. /telegram/webhook")
        path = None
    elif path and not _WEBHOOK_PATH_RE.fullmatch(path):
        r.problems.append(
            f"{prefix}.path: '{path}' may use only letters, digits and / . _ ~ -, e.g. /telegram/webhook"
        )
        path = None
    secret = r.string(f"{prefix}.secret_token") if enabled else r.string(f"{prefix}.secret_token", "")
    # The value is never echoed in a problem: config problems end up in terminals and logs.
    if secret and "REPLACE" in secret:
        r.problems.append(
            f"{prefix}.secret_token: still the placeholder from config.example.yaml; {_SECRET_HOWTO}"
        )
        secret = None
    elif secret and not _WEBHOOK_SECRET_RE.fullmatch(secret):
        wrong = (
            f"is {len(secret)} characters long"
            if len(secret) > 256
            else "has characters other than A-Z a-z 0-9 _ -"
        )
        r.problems.append(
            f"{prefix}.secret_token: {wrong}; Telegram's setWebhook accepts 1 to 256 characters "
            f"of A-Z a-z 0-9 _ - only; {_SECRET_HOWTO}"
        )
        secret = None
    if not enabled or not (public_url and listen_host and listen_port and path and secret):
        return None
    return TelegramWebhookConfig(
        public_url=public_url,
        listen_host=listen_host,
        listen_port=listen_port,
        path=path,
        secret_token=secret,
    )


def _check_webhook_url(r: ConfigReader, key: str, value: str) -> str | None:
    """Telegram POSTs only to https on ports 443, 80, 88 or 8443; plain http is let through for
    127.0.0.1/localhost because the sandbox (never Telegram) delivers there."""
    example = "https://bridge.example.com/telegram/webhook"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        r.problems.append(f"{key}: '{value}' has an invalid port; write it as {example}")
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("http", "https") or not host:
        r.problems.append(f"{key}: '{value}' is not a valid URL; write it as {example}")
        return None
    if scheme == "http" and host not in _WEBHOOK_HTTP_HOSTS:
        r.problems.append(
            f"{key}: '{value}' is plain http; Telegram only POSTs to https URLs, so use e.g. {example} "
            "with a TLS reverse proxy forwarding to listen_host:listen_port "
            "(http is accepted only for 127.0.0.1 or localhost, for the local sandbox)"
        )
        return None
    if scheme == "https" and port is not None and port not in _WEBHOOK_PORTS:
        r.problems.append(
            f"{key}: port {port} is not one Telegram delivers to; use 443, 80, 88 or 8443 "
            "and let the reverse proxy forward to listen_host:listen_port"
        )
        return None
    if parts.fragment:
        r.problems.append(f"{key}: '{value}' has a '#' fragment, which is never sent; remove it")
        return None
    return value
