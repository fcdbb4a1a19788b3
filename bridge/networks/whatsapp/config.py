"""``networks.whatsapp``: the company's WhatsApp Business numbers on Meta's Cloud API.

Parsed with the same reader as the rest of the config so every problem names its key path and
the fix. Secrets (access tokens, the app secret, the verify token) are kept out of ``repr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.networks.spec import ConfigContext
    from policies.reader import ConfigReader

PREFIX = "networks.whatsapp"
DEFAULT_GRAPH_URL = "https://graph.facebook.com/v21.0"
_SECRET_HOWTO = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
_KEYS = ("enabled", "graph_url", "app_secret", "verify_token", "webhook", "numbers", "default_language")
_WEBHOOK_KEYS = ("listen_host", "listen_port", "path", "public_url")
_NUMBER_KEYS = ("phone_number_id", "access_token", "waba_id", "name")
_PATH_RE = re.compile(r"^/[A-Za-z0-9/._~\-]*$")


@dataclass(frozen=True)
class WhatsAppNumber:
    """One company number: clients write to it; its conversations are portals of account
    ``phone_number_id`` (``whatsapp:<phone_number_id>`` in the policy's account_owners)."""

    phone_number_id: str
    access_token: str = field(repr=False)
    #: The WhatsApp Business Account holding the number (lists its message templates).
    waba_id: str = ""
    name: str = ""


@dataclass(frozen=True)
class WhatsAppConfig:
    graph_url: str
    #: The Meta app's secret: the key of every webhook's X-Hub-Signature-256.
    app_secret: str = field(repr=False)
    #: Chosen by the company and typed into the app dashboard; Meta echoes it when subscribing.
    verify_token: str = field(repr=False)
    listen_host: str
    listen_port: int
    path: str
    public_url: str
    numbers: tuple[WhatsAppNumber, ...]
    default_language: str = "en"

    def secrets(self) -> tuple[str, ...]:
        return (self.app_secret, self.verify_token, *(n.access_token for n in self.numbers))

    def number(self, phone_number_id: str) -> WhatsAppNumber | None:
        return next((n for n in self.numbers if n.phone_number_id == phone_number_id), None)


def parse_whatsapp(r: ConfigReader, context: ConfigContext) -> WhatsAppConfig | None:
    """None unless ``networks.whatsapp.enabled`` is true; the keys are checked either way."""
    appservice_port = context.appservice_port
    networks = r.data.get("networks")
    section = networks.get("whatsapp") if isinstance(networks, dict) else None
    if section is None:
        return None
    if not isinstance(section, dict):
        r.problems.append(
            f"{PREFIX}: expected a mapping of keys (see config.example.yaml), got a {type(section).__name__}"
        )
        return None
    for key in section:
        if key not in _KEYS:
            r.unknown_key(f"{PREFIX}.{key}", str(key), tuple(_KEYS))
    enabled = r.boolean(f"{PREFIX}.enabled", False)
    graph_url = r.url(f"{PREFIX}.graph_url", DEFAULT_GRAPH_URL)
    app_secret = _secret(
        r, f"{PREFIX}.app_secret", "the App Secret from your Meta app's Settings > Basic page", bool(enabled)
    )
    verify_token = _secret(
        r,
        f"{PREFIX}.verify_token",
        f"a random string you also enter in the app's webhook settings; {_SECRET_HOWTO}",
        bool(enabled),
    )
    language = r.string(f"{PREFIX}.default_language", "en")

    hook = section.get("webhook", {})
    if not isinstance(hook, dict):
        r.problems.append(f"{PREFIX}.webhook: expected a mapping with {', '.join(_WEBHOOK_KEYS)}")
        hook = {}
    for key in hook:
        if key not in _WEBHOOK_KEYS:
            r.unknown_key(f"{PREFIX}.webhook.{key}", str(key), tuple(_WEBHOOK_KEYS))
    listen_host = r.string(f"{PREFIX}.webhook.listen_host", "127.0.0.1")
    listen_port = r.integer(f"{PREFIX}.webhook.listen_port", 29342, low=1, high=65535)
    if enabled and listen_port is not None and listen_port == appservice_port:
        r.problems.append(
            f"{PREFIX}.webhook.listen_port: {listen_port} is the appservice's port; give the WhatsApp webhook its own, e.g. 29342"
        )
    path = r.string(f"{PREFIX}.webhook.path", "/whatsapp/webhook")
    if path and not _PATH_RE.fullmatch(path):
        r.problems.append(
            f"{PREFIX}.webhook.path: '{path}' must start with '/' and use only letters, digits and / . _ ~ -"
        )
    public_url = r.url(f"{PREFIX}.webhook.public_url", "")

    numbers: list[WhatsAppNumber] = []
    raw_numbers = section.get("numbers", [])
    if not isinstance(raw_numbers, list):
        r.problems.append(
            f"{PREFIX}.numbers: expected a list of numbers, each with phone_number_id and access_token"
        )
        raw_numbers = []
    if enabled and not raw_numbers:
        r.problems.append(
            f"{PREFIX}.numbers: empty; list the company's WhatsApp numbers, each with its phone_number_id "
            "(WhatsApp Manager > Phone numbers) and an access_token (a system user token)"
        )
    seen: set[str] = set()
    for i, raw in enumerate(raw_numbers):
        key = f"{PREFIX}.numbers[{i}]"
        if not isinstance(raw, dict):
            r.problems.append(f"{key}: expected a mapping with phone_number_id and access_token")
            continue
        for k in raw:
            if k not in _NUMBER_KEYS:
                r.unknown_key(f"{key}.{k}", str(k), tuple(_NUMBER_KEYS))
        pnid = str(raw.get("phone_number_id", ""))
        if not pnid.isdigit():
            r.problems.append(
                f"{key}.phone_number_id: {raw.get('phone_number_id')!r} is not a phone number id; it is the digits WhatsApp Manager shows, e.g. '106540352242922'"
            )
            continue
        if pnid in seen:
            r.problems.append(f"{key}.phone_number_id: {pnid} is listed twice")
            continue
        seen.add(pnid)
        token = _secret(
            r,
            f"{key}.access_token",
            "a system user access token with whatsapp_business_messaging permission",
            bool(enabled),
            raw.get("access_token", ""),
        )
        waba = str(raw.get("waba_id", ""))
        if waba and not waba.isdigit():
            r.problems.append(f"{key}.waba_id: {waba!r} is not a WhatsApp Business Account id (digits)")
        numbers.append(WhatsAppNumber(pnid, token or "", waba, str(raw.get("name", ""))))

    if not enabled:
        return None
    return WhatsAppConfig(
        graph_url=graph_url or DEFAULT_GRAPH_URL,
        app_secret=app_secret or "",
        verify_token=verify_token or "",
        listen_host=listen_host or "127.0.0.1",
        listen_port=listen_port or 29342,
        path=path or "/whatsapp/webhook",
        public_url=public_url or "",
        numbers=tuple(numbers),
        default_language=language or "en",
    )


def _secret(r: ConfigReader, key: str, what: str, required: bool, value: object = None) -> str | None:
    """A secret: when the network is enabled, present, not a placeholder, not trivially short.
    While it is disabled only the type is checked (an example file's placeholders are fine)."""
    if value is None:
        value = r.get(key, "")
    if not isinstance(value, str):
        r.problems.append(f"{key}: expected text ({what})")
        return None
    if not required:
        return value or None
    if not value:
        r.problems.append(f"{key}: missing; set it to {what}")
        return None
    if "REPLACE" in value:
        r.problems.append(f"{key}: still the placeholder from config.example.yaml; set it to {what}")
        return None
    if len(value) < 16:
        r.problems.append(f"{key}: too short to be {what} (at least 16 characters)")
        return None
    return value
