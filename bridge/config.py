"""Loading and validating ``config.yaml``.

Every problem is reported with the key path, what was wrong and how to fix it, and all problems
are reported at once, so an operator fixes the file in one pass. Nothing is started before the
whole file is valid: ``houseline run`` exits with status 2 on a :class:`ConfigError`.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml
from yarl import URL

from bridge.networks import network_names, registered, spec_of
from policies.reader import MISSING, ConfigReader, value_kind
from bridge.networks.spec import ConfigContext, NetworkSpec
from policies.model import Policy, PolicyError, parse_policy
from puppets.ids import GhostNamer, ghost_localpart_pattern

if TYPE_CHECKING:
    from bridge.integrations_config import (
        ApiConfig,
        MetricsConfig,
        ReportsConfig,
        SmtpArchiveConfig,
        WebhookReceiver,
    )

#: Placeholders a ghost localpart template may use.
GHOST_TEMPLATE_FIELDS = {"network", "id"}
#: Placeholders an employee signature template may use.
SIGNATURE_FIELDS = {"displayname", "company", "localpart", "user_id"}

_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/]+$")
_USER_ID_RE = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-:\[\]]+$")
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


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
    portals: PortalsConfig
    logging: LoggingConfig
    policy: Policy = field(default_factory=lambda: parse_policy(None, local_domain="localhost", networks=()))
    path: Path | None = None
    #: The switched-on networks' own configs, by network name (bridge.networks lists them).
    networks: Mapping[str, Any] = field(default_factory=dict)
    #: The integration surface (bridge.integrations_config); each off unless configured.
    api: ApiConfig | None = None
    metrics: MetricsConfig | None = None
    webhooks: tuple[WebhookReceiver, ...] = ()
    archive: SmtpArchiveConfig | None = None
    reports: ReportsConfig | None = None

    def network(self, name: str) -> Any | None:
        """The config of network ``name``, None when it is off."""
        return self.networks.get(name)

    def network_secrets(self) -> tuple[str, ...]:
        """Secrets of the networks and integrations, for the log scrubber."""
        out: list[str] = []
        for name, section in self.networks.items():
            out += spec_of(name).secrets(section)
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
        return GhostNamer(self.appservice.ghost_localpart_template, self.homeserver.domain, network_names())


_HINTS = {
    "homeserver.url": "set it to the client-server API URL of your homeserver, e.g. http://127.0.0.1:8008",
    "homeserver.domain": "set it to the homeserver's server_name, the part after ':' in user ids, e.g. example.com",
    "appservice.address": "set it to the URL at which the homeserver reaches this bridge, e.g. http://127.0.0.1:29340",
    "appservice.port": "set it to the TCP port the bridge listens on, e.g. 29340",
    "appservice.registration": "set it to the path of the file written by 'houseline generate-registration'",
    "portals.company": "set it to your company's name as clients should see it, e.g. Acme Advisers",
    "database.url": "use sqlite:houseline.db (default) or postgres://user:password@host/db",
}


def _template_fields(template: str) -> set[str] | None:
    """Names used in a ``str.format`` template, or None if the template is malformed."""
    import string

    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        return None


def parse_config(data: Any, *, path: Path | None = None) -> Config:
    """Validate a loaded YAML document and build the typed config, or raise ConfigError."""
    source = str(path) if path else "config"
    if not isinstance(data, dict):
        raise ConfigError(
            [
                f"(top level): expected a mapping of sections, got {value_kind(data)}; start from config.example.yaml"
            ],
            source,
        )
    r = ConfigReader(data, hints=dict(_HINTS))
    base = path.parent if path else Path.cwd()

    known_sections = {"homeserver", "appservice", "database", "networks", "portals", "logging", "policies",
                      "api", "metrics", "webhooks", "archive", "reports"}  # fmt: skip
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
    address = r.url("appservice.address", f"http://{host}:{port}" if host and port else MISSING)
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
            ghost_localpart_pattern(template, network_names()), bot_localpart
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

    networks = _parse_networks(r, ConfigContext(appservice_port=port, base=base))

    invite = r.get("portals.invite", [])
    invite_list: list[str] = []
    if isinstance(invite, str):
        invite = [invite]
    if not isinstance(invite, list):
        r.problems.append(f"portals.invite: expected a list of Matrix user ids, got {value_kind(invite)}")
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
        portals=PortalsConfig(invite=tuple(invite_list), company=company, signature=signature or ""),
        logging=LoggingConfig(level=level.upper(), format=log_format),
        policy=policy,
        path=path,
        networks=networks,
        **integrations,
    )


def _parse_networks(r: ConfigReader, context: ConfigContext) -> dict[str, Any]:
    """Each registered network reads its own ``networks.<name>`` section; the switched-on ones
    are kept by name."""
    names = network_names()
    sections = r.get("networks", {})
    if isinstance(sections, dict):
        for key in sections:
            if key not in names:
                r.problems.append(f"networks.{key}: unknown network; supported: {', '.join(names)}")
    out: dict[str, Any] = {}
    for spec in registered():
        section = spec.parse_config(r, context)
        if section is not None and _installed(r, spec):
            out[spec.name] = section
    return out


def _installed(r: ConfigReader, spec: NetworkSpec) -> bool:
    modules, extra = spec.requires
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        r.problems.append(
            f"{spec.config_path}: the {spec.display_name} library is not installed (no module "
            f"{', '.join(missing)}); install it with: pip install 'houseline[{extra}]' "
            f"(or set {spec.config_path}.enabled: false)"
        )
    return not missing


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
            f"policies: expected a mapping of policy keys, got {value_kind(raw)}; see policies/example.yaml"
        )
        return None
    try:
        return parse_policy(raw, local_domain=domain or "localhost", networks=network_names())
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
