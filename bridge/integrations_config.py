"""The sections that connect Houseline to a company's other systems: ``api`` (the HTTP API),
``metrics`` (Prometheus), ``webhooks`` (events to a CRM) and ``archive`` (SMTP journaling).

All are off unless configured. Parsed with the config's reader, so each problem names its key
path and the fix; secrets (tokens, webhook secrets, SMTP passwords) stay out of ``repr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policies.reader import value_kind

if TYPE_CHECKING:
    from policies.reader import ConfigReader

#: Scopes an API token may carry: read (GET), write (assign, hold, outreach...), admin
#: (offboard, export, profiles of anyone).
API_SCOPES = ("read", "write", "admin")
#: Event types a webhook may subscribe to ("*": all of them).
WEBHOOK_EVENTS = (
    "conversation.created", "conversation.assigned", "conversation.offboarded", "message.inbound",
    "message.outbound", "message.denied", "sla.breached", "absence.started", "absence.ended",
)  # fmt: skip
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SECRET_HOWTO = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


@dataclass(frozen=True)
class ApiToken:
    #: Who the audit trail names as the actor of the token's writes ("api:<name>").
    name: str
    token: str = field(repr=False)
    scopes: frozenset[str] = frozenset({"read"})


@dataclass(frozen=True)
class ApiConfig:
    listen_host: str
    listen_port: int
    tokens: tuple[ApiToken, ...]
    #: Largest request body accepted, in bytes (413 above it).
    max_body_bytes: int = 1_000_000


@dataclass(frozen=True)
class MetricsConfig:
    """``GET /metrics``: on the API listener (``listen_port`` None) or a listener of its own."""

    listen_host: str
    listen_port: int | None
    #: A scraper's bearer token (None: the metrics listener needs none; only on loopback).
    token: str | None = field(default=None, repr=False)
    #: Minutes without a successful poll or webhook before capture counts as stopped.
    capture_stale_minutes: int = 10


@dataclass(frozen=True)
class WebhookReceiver:
    name: str
    url: str
    secret: str = field(repr=False)
    events: frozenset[str] = frozenset(WEBHOOK_EVENTS)


@dataclass(frozen=True)
class SmtpArchiveConfig:
    host: str
    port: int
    #: "starttls", "tls" (implicit TLS) or "none" (loopback only).
    security: str
    username: str | None
    password: str | None = field(repr=False)
    #: The archive's journal address: every message is sent there.
    journal_address: str = ""
    #: The envelope and From of journal messages.
    sender: str = ""
    #: Seconds a message waits before it is journaled (edits arriving meanwhile go separately).
    delay_s: int = 0


@dataclass(frozen=True)
class ReportsConfig:
    """``reports``: the service report posted to the compliance review room on a schedule."""

    #: "daily" (the day before, after midnight UTC) or "weekly" (Monday to Monday, UTC).
    schedule: str


REPORT_SCHEDULES = ("daily", "weekly")


def parse_integrations(r: ConfigReader, base: Path) -> dict[str, Any]:
    """The integration sections as keyword arguments for ``Config``."""
    return {
        "api": _api(r, base),
        "metrics": _metrics(r),
        "webhooks": _webhooks(r),
        "archive": _archive(r),
        "reports": _reports(r),
    }


def _reports(r: ConfigReader) -> ReportsConfig | None:
    raw = _section(r, "reports", ("schedule",))
    if raw is None:
        return None
    schedule = raw.get("schedule")
    if schedule not in REPORT_SCHEDULES:
        r.bad(
            "reports.schedule",
            f"{value_kind(schedule)} is not a schedule; use daily or weekly (or leave the reports section out)",
        )
        return None
    return ReportsConfig(schedule)


def _section(r: ConfigReader, name: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    raw = r.data.get(name)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        r.problems.append(f"{name}: expected a mapping of keys (see config.example.yaml)")
        return None
    for key in raw:
        if key not in keys:
            r.unknown_key(f"{name}.{key}", str(key), tuple(keys))
    return raw


def _secret(r: ConfigReader, path: str, value: Any, what: str) -> str | None:
    if not isinstance(value, str) or not value:
        r.problems.append(f"{path}: missing; set it to {what} ({_SECRET_HOWTO})")
        return None
    if "REPLACE" in value:
        r.problems.append(
            f"{path}: still the placeholder from config.example.yaml; set it to {what} ({_SECRET_HOWTO})"
        )
        return None
    if len(value) < 24:
        r.problems.append(f"{path}: too short for {what} (at least 24 characters; {_SECRET_HOWTO})")
        return None
    return value


def _api(r: ConfigReader, base: Path) -> ApiConfig | None:
    raw = _section(r, "api", ("enabled", "listen_host", "listen_port", "tokens", "token_file", "max_body_kb"))
    if raw is None or r.boolean("api.enabled", False) is not True:
        return None
    host = r.string("api.listen_host", "127.0.0.1")
    port = r.integer("api.listen_port", 29350, low=1, high=65535)
    max_kb = r.integer("api.max_body_kb", 1000, low=1, high=100_000)
    entries = raw.get("tokens") or []
    if raw.get("token_file") is not None:
        entries = list(entries) + _token_file(r, base, raw["token_file"])
    if not isinstance(entries, list) or not entries:
        r.problems.append(
            "api.tokens: missing or empty; list at least one {name, token, scopes} (the API has no unauthenticated endpoint)"
        )
        entries = []
    tokens: list[ApiToken] = []
    for i, entry in enumerate(entries):
        path = f"api.tokens[{i}]"
        if not isinstance(entry, dict):
            r.problems.append(f"{path}: expected a mapping with name, token and scopes")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not _TOKEN_NAME.match(name):
            r.problems.append(
                f"{path}.name: {name!r} is not a token name; use letters, digits, '_', '.', '-', e.g. crm"
            )
            continue
        if any(t.name == name for t in tokens):
            r.problems.append(f"{path}.name: '{name}' is used by another token; give each its own name")
            continue
        secret = _secret(r, f"{path}.token", entry.get("token"), "a random bearer token")
        scopes = entry.get("scopes", ["read"])
        if not isinstance(scopes, list) or not scopes or any(s not in API_SCOPES for s in scopes):
            r.problems.append(
                f"{path}.scopes: {scopes!r} is not a list of scopes; use some of {', '.join(API_SCOPES)}"
            )
            continue
        if secret is not None:
            tokens.append(ApiToken(name, secret, frozenset(scopes)))
    secrets = [t.token for t in tokens]
    if len(set(secrets)) != len(secrets):
        r.problems.append("api.tokens: two tokens share the same secret; give each its own")
    return ApiConfig(host or "127.0.0.1", port or 29350, tuple(tokens), (max_kb or 1000) * 1024)


def _token_file(r: ConfigReader, base: Path, value: Any) -> list[Any]:
    """A YAML file with the same list as ``api.tokens``, kept out of the config (mode 0600)."""
    import yaml

    path = Path(str(value))
    path = path if path.is_absolute() else base / path
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        r.problems.append(
            f"api.token_file: cannot read {path} ({type(e).__name__}); give a YAML file with a list of {{name, token, scopes}}"
        )
        return []
    if not isinstance(data, list):
        r.problems.append(f"api.token_file: {path} must hold a list of {{name, token, scopes}}")
        return []
    return data


def _metrics(r: ConfigReader) -> MetricsConfig | None:
    raw = _section(r, "metrics", ("enabled", "listen_host", "listen_port", "token", "capture_stale_minutes"))
    if raw is None or r.boolean("metrics.enabled", False) is not True:
        return None
    host = r.string("metrics.listen_host", "127.0.0.1")
    port = (
        r.integer("metrics.listen_port", None, low=1, high=65535)
        if raw.get("listen_port") is not None
        else None
    )
    token = (
        _secret(r, "metrics.token", raw["token"], "a scraper's bearer token")
        if raw.get("token") is not None
        else None
    )
    if port is not None and token is None and host not in ("127.0.0.1", "localhost", "::1"):
        r.problems.append(
            f"metrics.token: missing; a metrics listener on {host} (not loopback) needs a bearer token"
        )
    stale = r.integer("metrics.capture_stale_minutes", 10, low=1, high=10_000)
    return MetricsConfig(host or "127.0.0.1", port, token, stale or 10)


def _webhooks(r: ConfigReader) -> tuple[WebhookReceiver, ...]:
    raw = r.data.get("webhooks")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problems.append("webhooks: expected a list of receivers, each with name, url, secret and events")
        return ()
    out: list[WebhookReceiver] = []
    for i, entry in enumerate(raw):
        path = f"webhooks[{i}]"
        if not isinstance(entry, dict):
            r.problems.append(f"{path}: expected a mapping with name, url, secret and events")
            continue
        for key in entry:
            if key not in ("name", "url", "secret", "events"):
                r.unknown_key(f"{path}.{key}", str(key), ("name", "url", "secret", "events"))
        name = entry.get("name")
        if not isinstance(name, str) or not _TOKEN_NAME.match(name) or any(w.name == name for w in out):
            r.problems.append(
                f"{path}.name: {name!r} is not a unique receiver name; use letters, digits, '_', '.', '-', e.g. crm"
            )
            continue
        url = _url(r, f"{path}.url", entry.get("url"))
        secret = _secret(
            r,
            f"{path}.secret",
            entry.get("secret"),
            "the shared secret the receiver verifies signatures with",
        )
        events = entry.get("events", ["*"])
        if (
            not isinstance(events, list)
            or not events
            or any(e != "*" and e not in WEBHOOK_EVENTS for e in events)
        ):
            r.problems.append(
                f"{path}.events: {events!r} is not a list of event types; use some of {', '.join(WEBHOOK_EVENTS)} or '*'"
            )
            continue
        if url and secret:
            out.append(
                WebhookReceiver(
                    name, url, secret, frozenset(WEBHOOK_EVENTS) if "*" in events else frozenset(events)
                )
            )
    return tuple(out)


def _url(r: ConfigReader, path: str, value: Any) -> str | None:
    from urllib.parse import urlparse

    if (
        not isinstance(value, str)
        or urlparse(value).scheme not in ("http", "https")
        or not urlparse(value).netloc
    ):
        r.problems.append(f"{path}: {value!r} is not a URL; write it as https://host/path")
        return None
    host = urlparse(value).hostname or ""
    if urlparse(value).scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        r.problems.append(
            f"{path}: plain http to {host} would send client messages unencrypted; use https (http only for loopback)"
        )
        return None
    return value


def _archive(r: ConfigReader) -> SmtpArchiveConfig | None:
    raw = _section(r, "archive", ("smtp",))
    if raw is None or raw.get("smtp") is None:
        return None
    smtp = raw["smtp"]
    if not isinstance(smtp, dict):
        r.problems.append("archive.smtp: expected a mapping with host, port, security, journal_address")
        return None
    keys = (
        "enabled",
        "host",
        "port",
        "security",
        "username",
        "password",
        "journal_address",
        "sender",
        "delay_seconds",
    )
    for key in smtp:
        if key not in keys:
            r.unknown_key(f"archive.smtp.{key}", str(key), tuple(keys))
    if r.boolean("archive.smtp.enabled", True) is not True:
        return None
    host = r.string("archive.smtp.host")
    security = r.string("archive.smtp.security", "starttls")
    if security not in ("starttls", "tls", "none"):
        r.problems.append(f"archive.smtp.security: {security!r} is not starttls, tls or none")
        security = "starttls"
    port = r.integer("archive.smtp.port", 465 if security == "tls" else 587, low=1, high=65535)
    if security == "none" and host not in ("127.0.0.1", "localhost", "::1"):
        r.problems.append(
            f"archive.smtp.security: none would send the record unencrypted to {host}; use starttls or tls (none only for loopback)"
        )
    username = r.string("archive.smtp.username", None) if smtp.get("username") is not None else None
    password = r.string("archive.smtp.password", None) if smtp.get("password") is not None else None
    if password is not None and "REPLACE" in password:
        r.problems.append(
            "archive.smtp.password: still the placeholder from config.example.yaml; set the archive account's password"
        )
    if (username is None) != (password is None):
        r.problems.append("archive.smtp.password: username and password go together; set both or neither")
    journal = r.string("archive.smtp.journal_address")
    if journal and "@" not in journal:
        r.problems.append(
            f"archive.smtp.journal_address: {journal!r} is not a mail address; the archive's journal address, e.g. journal@archive.example.com"
        )
    sender = r.string("archive.smtp.sender", "houseline@localhost")
    delay = r.integer("archive.smtp.delay_seconds", 0, low=0, high=86_400)
    return SmtpArchiveConfig(
        host or "", port or 587, security, username, password, journal or "", sender or "", delay or 0
    )
