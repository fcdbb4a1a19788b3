"""Loading and validating ``config.yaml``.

Every problem is reported with the key path, what was wrong and how to fix it, and all problems
are reported at once, so an operator fixes the file in one pass. Nothing is started before the
whole file is valid: ``houseline run`` exits with status 2 on a :class:`ConfigError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse, urlsplit

import yaml
from yarl import URL

from policies.model import Policy, PolicyError, parse_policy
from puppets.ids import GhostNamer, ghost_localpart_pattern

if TYPE_CHECKING:
    from bridge.integrations_config import ApiConfig, MetricsConfig, SmtpArchiveConfig, WebhookReceiver
    from bridge.networks.whatsapp.config import WhatsAppConfig

#: Networks the bridge can carry; the ghost namespace covers exactly these.
SUPPORTED_NETWORKS = ("telegram", "whatsapp")
#: Placeholders a ghost localpart template may use.
GHOST_TEMPLATE_FIELDS = {"network", "id"}
#: Placeholders an employee signature template may use.
SIGNATURE_FIELDS = {"displayname", "company", "localpart", "user_id"}

_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/]+$")
_USER_ID_RE = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-:\[\]]+$")
_BOT_TOKEN_RE = re.compile(r"^[0-9]+:[A-Za-z0-9_-]{20,}$")
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}
#: setWebhook's own rule for secret_token, checked here so a bad one fails at start, not at setWebhook.
_WEBHOOK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
#: A literal aiohttp route: no '{' (a route variable), no '?' or '#', no spaces.
_WEBHOOK_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_WEBHOOK_KEYS = ("enabled", "public_url", "listen_host", "listen_port", "path", "secret_token")
#: The only ports Telegram delivers webhooks to.
_WEBHOOK_PORTS = (443, 80, 88, 8443)
#: Hosts for which a plain-http public_url is accepted: the local sandbox, never Telegram.
_WEBHOOK_HTTP_HOSTS = ("127.0.0.1", "localhost")
_SECRET_HOWTO = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class HomeserverConfig:
    url: str
    domain: str
    #: Check the homeserver's TLS certificate (switch off only for a local test homeserver with a
    #: self-signed certificate).
    verify_tls: bool = True


@dataclass(frozen=True)
class AppserviceConfig:
    host: str
    port: int
    address: str
    id: str
    bot_localpart: str
    bot_displayname: str
    ghost_localpart_template: str
    registration: Path


@dataclass(frozen=True)
class DatabaseConfig:
    url: str


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
    enabled: bool
    bot_token: str
    polling_timeout: int
    base_url: str | None
    base_file_url: str | None
    #: None means long polling (the default).
    webhook: TelegramWebhookConfig | None = None
    #: Keep to Telegram's send limits before sending (the default); False only for a Bot API
    #: server without them (a test server), 429s are honoured either way.
    pacing: bool = True


@dataclass(frozen=True)
class PortalsConfig:
    invite: tuple[str, ...]
    company: str
    signature: str


@dataclass(frozen=True)
class LoggingConfig:
    level: str
    format: str


@dataclass(frozen=True)
class Config:
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    database: DatabaseConfig
    telegram: TelegramConfig
    portals: PortalsConfig
    logging: LoggingConfig
    policy: Policy = field(default_factory=lambda: parse_policy(None, local_domain="localhost"))
    path: Path | None = None
    #: None unless networks.whatsapp.enabled.
    whatsapp: WhatsAppConfig | None = None
    #: The integration surface (bridge.integrations_config); each off unless configured.
    api: ApiConfig | None = None
    metrics: MetricsConfig | None = None
    webhooks: tuple[WebhookReceiver, ...] = ()
    archive: SmtpArchiveConfig | None = None

    def network_secrets(self) -> tuple[str, ...]:
        """Secrets of the optional networks and integrations, for the log scrubber."""
        out: list[str] = []
        wa = self.whatsapp
        if wa is not None:
            out += [wa.app_secret, wa.verify_token, *(n.access_token for n in wa.numbers)]
        if self.api is not None:
            out += [t.token for t in self.api.tokens]
        if self.metrics is not None and self.metrics.token:
            out.append(self.metrics.token)
        out += [w.secret for w in self.webhooks]
        if self.archive is not None and self.archive.password:
            out.append(self.archive.password)
        return tuple(s for s in out if s)

    @property
    def bot_mxid(self) -> str:
        return f"@{self.appservice.bot_localpart}:{self.homeserver.domain}"

    def ghost_namer(self) -> GhostNamer:
        return GhostNamer(
            self.appservice.ghost_localpart_template, self.homeserver.domain, SUPPORTED_NETWORKS
        )


_MISSING = object()


@dataclass
class _Reader:
    """Walks the raw mapping, collecting problems instead of stopping at the first."""

    data: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    def get(self, path: str, default: Any = _MISSING) -> Any:
        node: Any = self.data
        walked: list[str] = []
        for part in path.split("."):
            if not isinstance(node, dict):
                self.problems.append(
                    f"{'.'.join(walked)}: expected a mapping of keys, got {_kind(node)}; "
                    f"write it as 'key: value' lines indented under '{walked[-1]}:'"
                )
                return None
            walked.append(part)
            if part not in node or node[part] is None:
                if default is _MISSING:
                    self.problems.append(f"{path}: missing; {_HINTS.get(path, 'add it')}")
                    return None
                return default
            node = node[part]
        return node

    def string(self, path: str, default: Any = _MISSING, *, allow_empty: bool = False) -> Any:
        value = self.get(path, default)
        if value is None or value is default:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.problems.append(
                f"{path}: expected text, got {_kind(value)}; {_HINTS.get(path, '')}".rstrip("; ")
            )
            return None
        if not allow_empty and not value.strip():
            self.problems.append(f"{path}: is empty; {_HINTS.get(path, 'give it a value')}")
            return None
        return value

    def integer(self, path: str, default: Any = _MISSING, *, low: int, high: int) -> Any:
        value = self.get(path, default)
        if value is None or value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.append(f"{path}: expected a whole number from {low} to {high}, got {_kind(value)}")
            return None
        if not low <= value <= high:
            self.problems.append(f"{path}: {value} is out of range; use a number from {low} to {high}")
            return None
        return value

    def boolean(self, path: str, default: Any = _MISSING) -> Any:
        value = self.get(path, default)
        if value is None or isinstance(value, bool):
            return value
        self.problems.append(f"{path}: expected true or false, got {_kind(value)}")
        return None

    def url(self, path: str, default: Any = _MISSING, *, schemes: tuple[str, ...] = ("http", "https")) -> Any:
        value = self.string(path, default)
        if not value or value is default:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not parsed.netloc:
            self.problems.append(
                f"{path}: '{value}' is not a valid URL; write it as "
                f"{' or '.join(s + '://host:port' for s in schemes)}"
            )
            return None
        return value.rstrip("/")


_HINTS = {
    "homeserver.url": "set it to the client-server API URL of your homeserver, e.g. http://127.0.0.1:8008",
    "homeserver.domain": "set it to the homeserver's server_name, the part after ':' in user ids, e.g. example.com",
    "appservice.address": "set it to the URL at which the homeserver reaches this bridge, e.g. http://127.0.0.1:29340",
    "appservice.port": "set it to the TCP port the bridge listens on, e.g. 29340",
    "appservice.registration": "set it to the path of the file written by 'houseline generate-registration'",
    "networks.telegram.bot_token": "set it to the token @BotFather gave your company's bot (123456:ABC-...)",
    "networks.telegram.webhook.public_url": (
        "set it to the https URL Telegram should POST updates to, e.g. https://bridge.example.com/telegram/webhook"
    ),
    "networks.telegram.webhook.secret_token": f"it is required with enabled: true; {_SECRET_HOWTO}",
    "portals.company": "set it to your company's name as clients should see it, e.g. Acme Advisers",
    "database.url": "use sqlite:houseline.db (default) or postgres://user:password@host/db",
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _template_fields(template: str) -> set[str] | None:
    """Names used in a ``str.format`` template, or None if the template is malformed."""
    import string

    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        return None


def _parse_telegram_webhook(r: _Reader, appservice_port: int | None) -> TelegramWebhookConfig | None:
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
            f"{prefix}: expected a mapping of keys, got {_kind(section)}; write the webhook keys "
            "indented under 'webhook:' (see config.example.yaml), or leave it out for long polling"
        )
        return None
    for key in section:
        if key not in _WEBHOOK_KEYS:
            r.problems.append(f"{prefix}.{key}: unknown key; the keys are {', '.join(_WEBHOOK_KEYS)}")

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


def _check_webhook_url(r: _Reader, key: str, value: str) -> str | None:
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


def parse_config(data: Any, *, path: Path | None = None) -> Config:
    """Validate a loaded YAML document and build the typed config, or raise ConfigError."""
    source = str(path) if path else "config"
    if not isinstance(data, dict):
        raise ConfigError(
            [
                f"(top level): expected a mapping of sections, got {_kind(data)}; start from config.example.yaml"
            ],
            source,
        )
    r = _Reader(data)
    base = path.parent if path else Path.cwd()

    known_sections = {"homeserver", "appservice", "database", "networks", "portals", "logging", "policies",
                      "api", "metrics", "webhooks", "archive"}  # fmt: skip
    for key in data:
        if key not in known_sections:
            r.problems.append(f"{key}: unknown section; the sections are {', '.join(sorted(known_sections))}")

    hs_url = r.url("homeserver.url")
    verify_tls = r.boolean("homeserver.verify_tls", True)
    domain = r.string("homeserver.domain")
    if domain and not re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?", domain):
        r.problems.append(
            f"homeserver.domain: '{domain}' is not a server name; use a host name like example.com (no scheme, no path)"
        )
        domain = None

    host = r.string("appservice.host", "127.0.0.1")
    port = r.integer("appservice.port", 29340, low=1, high=65535)
    address = r.url("appservice.address", f"http://{host}:{port}" if host and port else _MISSING)
    as_id = r.string("appservice.id", "houseline")
    if as_id and not re.fullmatch(r"[A-Za-z0-9_.\-]+", as_id):
        r.problems.append(f"appservice.id: '{as_id}' may only contain letters, digits, '.', '_' and '-'")
    bot_localpart = r.string("appservice.bot_localpart", "houseline")
    if bot_localpart and not _LOCALPART_RE.fullmatch(bot_localpart):
        r.problems.append(
            f"appservice.bot_localpart: '{bot_localpart}' is not a valid Matrix localpart; "
            "use lower-case letters, digits and . _ = - / only"
        )
    bot_displayname = r.string("appservice.bot_displayname", "Houseline")
    template = r.string("appservice.ghost_localpart_template", "{network}_{id}")
    if template:
        names = _template_fields(template)
        if names is None or not names <= GHOST_TEMPLATE_FIELDS or "id" not in names:
            r.problems.append(
                f"appservice.ghost_localpart_template: '{template}' must contain {{id}} and may use only "
                f"{{network}} and {{id}}, e.g. '{{network}}_{{id}}'"
            )
        elif not _LOCALPART_RE.fullmatch(template.replace("{network}", "x").replace("{id}", "x")):
            r.problems.append(
                f"appservice.ghost_localpart_template: the fixed text of '{template}' must use lower-case "
                "letters, digits and . _ = - / only"
            )
        elif bot_localpart and re.fullmatch(
            ghost_localpart_pattern(template, SUPPORTED_NETWORKS), bot_localpart
        ):
            r.problems.append(
                "appservice.ghost_localpart_template: the bot's localpart would fall inside the ghost "
                "namespace; give the template a prefix the bot's name does not have"
            )
    registration = r.string("appservice.registration", "registration.yaml")

    db_url = r.string("database.url", "sqlite:houseline.db")
    if db_url:
        scheme = db_url.split(":", 1)[0]
        if scheme in ("sqlite", "sqlite3"):
            db_path = URL(db_url).path
            if not db_path:
                r.problems.append("database.url: no file name; use sqlite:houseline.db")
            elif not Path(db_path).is_absolute():
                db_url = f"sqlite:{(base / db_path)}"
        elif scheme in ("postgres", "postgresql"):
            try:
                import asyncpg  # noqa: F401
            except ImportError:
                r.problems.append(
                    "database.url: a PostgreSQL URL needs the asyncpg package; "
                    "install it with: pip install 'houseline[postgres]'"
                )
        else:
            r.problems.append(f"database.url: unsupported scheme '{scheme}'; {_HINTS['database.url']}")

    networks = r.get("networks", {})
    if isinstance(networks, dict):
        for key in networks:
            if key not in SUPPORTED_NETWORKS:
                r.problems.append(
                    f"networks.{key}: unknown network; supported: {', '.join(SUPPORTED_NETWORKS)}"
                )
    tg_enabled = r.boolean("networks.telegram.enabled", True)
    bot_token = (
        r.string("networks.telegram.bot_token") if tg_enabled else r.string("networks.telegram.bot_token", "")
    )
    if tg_enabled and bot_token and "REPLACE" in bot_token:
        r.problems.append(
            "networks.telegram.bot_token: still the placeholder from config.example.yaml; "
            "put the token @BotFather gave your company's bot here"
        )
    elif tg_enabled and bot_token and not _BOT_TOKEN_RE.fullmatch(bot_token):
        r.problems.append(
            "networks.telegram.bot_token: does not look like a bot token; "
            "it is '<digits>:<letters>' as @BotFather gives it, e.g. 123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
        )
    polling_timeout = r.integer("networks.telegram.polling.timeout", 30, low=0, high=50)
    tg_pacing = r.boolean("networks.telegram.pacing", True)
    tg_base_url = r.url("networks.telegram.base_url", "")
    tg_base_file_url = r.url("networks.telegram.base_file_url", "")
    tg_webhook = _parse_telegram_webhook(r, port)
    from bridge.networks.whatsapp.config import parse_whatsapp  # no network library: plain data

    whatsapp = parse_whatsapp(r, port)

    invite = r.get("portals.invite", [])
    invite_list: list[str] = []
    if isinstance(invite, str):
        invite = [invite]
    if not isinstance(invite, list):
        r.problems.append(f"portals.invite: expected a list of Matrix user ids, got {_kind(invite)}")
    else:
        for i, user in enumerate(invite):
            if not isinstance(user, str) or not _USER_ID_RE.fullmatch(user):
                r.problems.append(
                    f"portals.invite[{i}]: {user!r} is not a Matrix user id; write it as '@alice:example.com'"
                )
            else:
                invite_list.append(user)
    company = r.string("portals.company")
    signature = r.string("portals.signature", "{displayname} ({company})", allow_empty=True)
    if signature:
        names = _template_fields(signature)
        if names is None or not names <= SIGNATURE_FIELDS:
            r.problems.append(
                f"portals.signature: '{signature}' may use only "
                + ", ".join("{" + n + "}" for n in sorted(SIGNATURE_FIELDS))
                + " (or be empty for no signature)"
            )

    level = r.string("logging.level", "INFO")
    if level and level.upper() not in _LOG_LEVELS:
        r.problems.append(
            f"logging.level: '{level}' is not a level; use one of {', '.join(sorted(_LOG_LEVELS))}"
        )
    log_format = r.string("logging.format", "keyvalue")
    if log_format and log_format not in ("keyvalue", "json"):
        r.problems.append(f"logging.format: '{log_format}' is not a format; use keyvalue or json")

    policy = _policies(data.get("policies"), base, domain, r.problems)
    from bridge.integrations_config import parse_integrations

    integrations = parse_integrations(r, base)

    if r.problems:
        raise ConfigError(r.problems, source)

    reg_path = Path(registration)
    if not reg_path.is_absolute():
        reg_path = base / reg_path
    return Config(
        homeserver=HomeserverConfig(url=hs_url, domain=domain, verify_tls=verify_tls),
        appservice=AppserviceConfig(
            host=host,
            port=port,
            address=address,
            id=as_id,
            bot_localpart=bot_localpart,
            bot_displayname=bot_displayname,
            ghost_localpart_template=template,
            registration=reg_path,
        ),
        database=DatabaseConfig(url=db_url),
        telegram=TelegramConfig(
            enabled=tg_enabled,
            bot_token=bot_token or "",
            polling_timeout=polling_timeout,
            base_url=tg_base_url or None,
            base_file_url=tg_base_file_url
            or (f"{tg_base_url.removesuffix('/bot')}/file/bot" if tg_base_url else None),
            webhook=tg_webhook,
            pacing=tg_pacing is not False,
        ),
        portals=PortalsConfig(invite=tuple(invite_list), company=company, signature=signature or ""),
        logging=LoggingConfig(level=level.upper(), format=log_format),
        policy=policy,
        path=path,
        whatsapp=whatsapp,
        **integrations,
    )


def _policies(raw: Any, base: Path, domain: str | None, problems: list[str]) -> Policy | None:
    """The ``policies`` section, inline or in the file it names (``policies: {file: policy.yaml}``)."""
    prefix = "policies"
    if isinstance(raw, dict) and set(raw) == {"file"}:
        policy_path = Path(str(raw["file"]))
        policy_path = policy_path if policy_path.is_absolute() else base / policy_path
        prefix = f"policies.file ({policy_path})"
        try:
            raw = yaml.safe_load(policy_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(
                f"policies.file: {policy_path} not found; give the path of the policy file, relative to the config"
            )
            return None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "somewhere"
            problems.append(
                f"policies.file: {policy_path} is not valid YAML ({where}); check indentation and quoting there"
            )
            return None
    if raw is not None and not isinstance(raw, dict):
        problems.append(
            f"policies: expected a mapping of policy keys, got {_kind(raw)}; see policies/example.yaml"
        )
        return None
    try:
        return parse_policy(raw, local_domain=domain or "localhost")
    except PolicyError as e:
        problems.extend(f"{prefix}.{p}" for p in e.problems)
        return None


def load_config(path: Path) -> Config:
    """Read and validate the file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"file not found; copy config.example.yaml to {path} and edit it"], str(path)
        ) from None
    except OSError as e:
        raise ConfigError([f"cannot read the file: {e.strerror}"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            [f"(YAML syntax) {where}: {problem}; check indentation and quoting there"], str(path)
        ) from None
    return parse_config(data, path=path.resolve())
