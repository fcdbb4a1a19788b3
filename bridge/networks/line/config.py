"""``networks.line``: the company's LINE Official Account, on LINE's Messaging API.

Read with the shared reader, so every problem names its key path and says how to fix it. The
two secrets (the channel secret that signs every webhook, the channel access token that
authorises every call) are kept out of ``repr``, and their values never appear in a problem:
config problems end up in terminals and logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from policies.reader import value_kind

if TYPE_CHECKING:
    from bridge.networks.spec import ConfigContext
    from policies.reader import ConfigReader

PREFIX = "networks.line"
DEFAULT_API_URL = "https://api.line.me"
DEFAULT_DATA_URL = "https://api-data.line.me"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 29343
DEFAULT_PATH = "/line/webhook"
DEFAULT_MEDIA_PATH = "/line/media"
_KEYS = ("enabled", "channel_secret", "channel_access_token", "api_url", "data_url", "webhook")
_WEBHOOK_KEYS = ("listen_host", "listen_port", "path", "public_url", "media_path")
#: A literal aiohttp route: no '{' (a route variable), no '?' or '#', no spaces.
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
#: LINE's webhook URL field takes at most 500 characters.
_MAX_WEBHOOK_URL = 500
#: Hosts for which a plain-http public_url is accepted: the local emulator, never LINE.
_HTTP_HOSTS = ("127.0.0.1", "localhost")
_SECRET_WHERE = "the Channel secret from the LINE Developers Console (your channel > Basic settings)"
_TOKEN_WHERE = (
    "a channel access token from the LINE Developers Console (your channel > Messaging API > "
    "Channel access token, long-lived)"
)
_URL_EXAMPLE = "https://bridge.example.com/line/webhook"


@dataclass(frozen=True)
class LineConfig:
    """One LINE Official Account (one Messaging API channel); its conversations are portals of
    the account's bot user id, which the connector learns from LINE at start."""

    #: Signs every webhook (``X-Line-Signature``): requests that do not carry it are refused.
    channel_secret: str = field(repr=False)
    #: Authorises every Messaging API call.
    channel_access_token: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    #: LINE serves content (clients' pictures, videos, files) from its own host.
    data_url: str = DEFAULT_DATA_URL
    listen_host: str = DEFAULT_HOST
    listen_port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH
    #: The HTTPS URL LINE posts webhooks to ("" leaves the URL set in the console as it is).
    public_url: str = ""
    #: Where the listener serves outbound media to LINE (LINE fetches media by URL only).
    media_path: str = DEFAULT_MEDIA_PATH

    def secrets(self) -> tuple[str, ...]:
        return (self.channel_secret, self.channel_access_token)

    @property
    def media_base(self) -> str:
        """The public address media are served under (public_url's origin + media_path), or ""
        without a public_url: then LINE cannot fetch anything the bridge would send."""
        if not self.public_url:
            return ""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}{self.media_path}"


def parse_line(r: ConfigReader, context: ConfigContext) -> LineConfig | None:
    """None unless ``networks.line.enabled`` is true; the keys are checked either way, so a
    mistake shows up before the day someone switches LINE on."""
    before = len(r.problems)
    section = _section(r)
    if section is None:
        return None
    enabled = r.boolean(f"{PREFIX}.enabled", False) is True
    secret = _secret(r, f"{PREFIX}.channel_secret", _SECRET_WHERE, enabled)
    token = _secret(r, f"{PREFIX}.channel_access_token", _TOKEN_WHERE, enabled)
    api_url = r.url(f"{PREFIX}.api_url", DEFAULT_API_URL)
    data_url = r.url(f"{PREFIX}.data_url", DEFAULT_DATA_URL)
    hook = _webhook(r, section, context.appservice_port, enabled)
    if not enabled or len(r.problems) > before or secret is None or token is None or hook is None:
        return None
    return LineConfig(
        channel_secret=secret,
        channel_access_token=token,
        api_url=api_url or DEFAULT_API_URL,
        data_url=data_url or DEFAULT_DATA_URL,
        **hook,
    )


def _section(r: ConfigReader) -> dict | None:
    networks = r.data.get("networks")
    section = networks.get("line") if isinstance(networks, dict) else None
    if section is None:
        return None
    if not isinstance(section, dict):
        r.bad(
            PREFIX,
            f"expected a mapping of keys, got {value_kind(section)}; write the LINE keys indented "
            "under 'line:' (see config.example.yaml)",
        )
        return None
    for key in section:
        if key not in _KEYS:
            r.unknown_key(f"{PREFIX}.{key}", str(key), _KEYS)
    return section


def _webhook(r: ConfigReader, section: dict, appservice_port: int | None, enabled: bool) -> dict | None:
    """The listener's keys; None when one of them is wrong (already reported)."""
    prefix = f"{PREFIX}.webhook"
    hook = section.get("webhook", {})
    if hook is None:
        hook = {}
    if not isinstance(hook, dict):
        r.bad(prefix, f"expected a mapping with {', '.join(_WEBHOOK_KEYS)}, got {value_kind(hook)}")
        return None
    for key in hook:
        if key not in _WEBHOOK_KEYS:
            r.unknown_key(f"{prefix}.{key}", str(key), _WEBHOOK_KEYS)
    host = r.string(f"{prefix}.listen_host", DEFAULT_HOST)
    port = r.integer(f"{prefix}.listen_port", DEFAULT_PORT, low=1, high=65535)
    if enabled and port is not None and port == appservice_port:
        r.bad(
            f"{prefix}.listen_port",
            f"{port} is also appservice.port; give the LINE webhook a port of its own, e.g. {DEFAULT_PORT}",
        )
        port = None
    path = _path(r, f"{prefix}.path", DEFAULT_PATH)
    media_path = _path(r, f"{prefix}.media_path", DEFAULT_MEDIA_PATH)
    if path and media_path and _overlap(path, media_path):
        r.bad(
            f"{prefix}.media_path",
            f"'{media_path}' overlaps the webhook path '{path}'; give media a path of its own, e.g. {DEFAULT_MEDIA_PATH}",
        )
        media_path = None
    public_url = r.string(f"{prefix}.public_url", "", allow_empty=True)
    if public_url:
        public_url = _public_url(r, f"{prefix}.public_url", public_url)
    if None in (host, port, path, media_path, public_url):
        return None
    return {
        "listen_host": host,
        "listen_port": port,
        "path": path,
        "public_url": public_url,
        "media_path": media_path,
    }


def _path(r: ConfigReader, key: str, default: str) -> str | None:
    path = r.string(key, default)
    if path is None:
        return None
    if not path.startswith("/"):
        r.bad(key, f"'{path}' must start with '/', e.g. {default}")
        return None
    if not _PATH_RE.fullmatch(path) or "//" in path or path == "/":
        r.bad(key, f"'{path}' may use only letters, digits and single / . _ ~ -, e.g. {default}")
        return None
    return path.rstrip("/")


def _overlap(path: str, media_path: str) -> bool:
    """Whether one route would shadow the other (media are served under ``media_path/``)."""
    return path == media_path or path.startswith(media_path + "/")


def _public_url(r: ConfigReader, key: str, value: str) -> str | None:
    """LINE posts only to HTTPS URLs of at most 500 characters; plain http is let through for
    127.0.0.1/localhost because only the local emulator, never LINE, delivers there."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        r.bad(key, f"'{value}' has an invalid port; write it as {_URL_EXAMPLE}")
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("http", "https") or not host:
        r.bad(key, f"'{value}' is not a valid URL; write it as {_URL_EXAMPLE}")
        return None
    if scheme == "http" and host not in _HTTP_HOSTS:
        r.bad(
            key,
            f"'{value}' is plain http; LINE only delivers to https URLs, so use e.g. {_URL_EXAMPLE} "
            "with a TLS reverse proxy forwarding to listen_host:listen_port "
            "(http is accepted only for 127.0.0.1 or localhost, for the local emulator)",
        )
        return None
    if parts.query or parts.fragment:
        r.bad(key, f"'{value}' has a query or '#' fragment; LINE needs a plain URL like {_URL_EXAMPLE}")
        return None
    if len(value) > _MAX_WEBHOOK_URL:
        r.bad(key, f"is {len(value)} characters long; LINE accepts a webhook URL of at most 500")
        return None
    return value


def _secret(r: ConfigReader, key: str, what: str, required: bool) -> str | None:
    """A secret: while LINE is off only its type is checked (an example file's placeholders
    are fine); when on, it must be present, not a placeholder, plausibly long, one word."""
    value = r.get(key, "")
    if not isinstance(value, str):
        # Never the value itself: a secret typed as a number would be printed.
        r.bad(
            key,
            f"expected text, got {_kind(value)}; set it to {what} (in quotes if it could read as a number)",
        )
        return None
    if not required:
        return value
    if not value:
        r.bad(key, f"missing; set it to {what}")
        return None
    if "REPLACE" in value:
        r.bad(key, f"still the placeholder from config.example.yaml; set it to {what}")
        return None
    if len(value) < 16 or any(c.isspace() for c in value):
        r.bad(key, f"does not look like {what} (one word of at least 16 characters)")
        return None
    return value


def _kind(value: object) -> str:
    """What a value is, without showing it."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "nothing" if value is None else type(value).__name__
