"""A throwaway local Synapse for the tests and the demo.

The bridge is only worth testing against a real homeserver: the appservice protocol, the
exclusive namespaces, the redaction rules and the rate limits are Synapse's behaviour, not
ours, and a mock would just encode our own assumptions. So this module runs a real Synapse
as a subprocess, on loopback, with SQLite in a scratch directory.

Design choices, and why:

* Synapse is only ever a *subprocess* (``sys.executable -m synapse.app.homeserver``). It is
  never imported here, so the sandbox stays light, cannot share Twisted state with the
  bridge's asyncio loop, and can be stopped and restarted mid-flow by the fault suites.
* We write the whole configuration ourselves instead of running ``--generate-config``
  (about 2 s) and patching it: the generated file is a template that breaks when appended
  to, and every key we care about is set explicitly here anyway. The ed25519 signing key is
  a random 32-byte seed in Synapse's one-line key-file format, so it is written directly
  instead of paying another Python start-up for ``generate_signing_key``.
* Synapse runs in its own session / process group so that ``stop`` can signal the whole
  group, and an ``atexit`` hook kills any group still alive when the interpreter exits
  (failed test run, KeyboardInterrupt). A ``kill -9`` of the parent cannot be caught; in
  that case ``synapse.pid`` in the data directory names the orphan.
* Every wait (readiness, shutdown, HTTP calls) has a timeout: a hung homeserver must fail
  a test, not hang CI.

Federating mode (``federation_address="127.0.0.N"``), for tests that need two servers:

* The server name is the IP literal *with the port* (``127.0.0.2:8482``). A port in the
  server name is the federation port, so peers connect straight to it: no ``.well-known``,
  no SRV, no DNS. Every address in 127.0.0.0/8 is loopback on Linux, so each server gets
  its own address and the names stay distinct even if two ports happened to coincide.
* Federation is HTTPS-only, so the one listener is TLS and serves ``client`` and
  ``federation``. Its certificate is self-signed and generated here (EC P-256, IP SAN) into
  the data directory, reused across restarts so that clients holding ``client_ssl`` keep
  working, and regenerated only when a data directory is reused with a certificate that
  is about to expire.
* Servers do not verify each other's certificates (``federation_verify_certificates:
  false``; each peer's certificate is unknown when the other is configured). Event and
  request signatures are still checked with the ed25519 keys, fetched directly from the
  peer (``trusted_key_servers: []``). Clients of the test, by contrast, *do* verify: the
  ``client_ssl`` context trusts exactly this server's certificate.
* Synapse refuses outbound requests to loopback by default. For federation the blocklist
  is emptied (``federation_ip_range_blacklist: []``; Synapse still blocks 0.0.0.0 and ::):
  an allow-list is not enough, because requests to IP-literal server names are checked
  against the blocklist alone. Other outbound traffic (push, ...) keeps the default
  blocklist with 127.0.0.0/8 allowed back (``ip_range_whitelist``). Synapse 1.163 reads
  only these older option names; ``ip_range_blocklist`` would be silently ignored.

PostgreSQL (``database_url="postgres://user@127.0.0.1:5432/synapse"``), for the benchmark:

* SQLite stays the default: it needs nothing installed and is what the tests and the demo use.
  Production Synapse runs on PostgreSQL, so the bench measures that too (bench/postgres.py
  starts a throwaway cluster and creates the database with the C collation Synapse requires).
* The URL has the same shape as the bridge's ``database.url``, so one cluster hands the same kind
  of value to both. Synapse connects with psycopg2 (the ``postgres`` extra installs
  psycopg2-binary); a data directory keeps whatever database it was first started with, so a
  restart must pass the same URL again.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import copy
import datetime
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml

__all__ = [
    "HomeserverError",
    "LocalHomeserver",
    "RegisteredUser",
    "free_port",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "homeserver.yaml"
LOG_CONFIG_FILE = "log.config.yaml"
SIGNING_KEY_FILE = "signing.key"
DATABASE_FILE = "homeserver.db"
MEDIA_STORE_DIR = "media_store"
LOG_FILE = "homeserver.log"
# Synapse's own stdout/stderr: config errors are printed here before logging is set up.
CONSOLE_LOG_FILE = "synapse.console.log"
PID_FILE = "synapse.pid"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"

# Generous enough that a test suite never trips a limit, but still a limit: the bridge must
# not depend on limits being absent, and `rate_limited: false` on the appservice
# registration is what exempts the bridge's own traffic.
_RELAXED = {"per_second": 1000, "burst_count": 1000}
_HTTP_TIMEOUT = 10.0
_TAIL_LINES = 40
# Federation traffic between two test servers comes in bursts (a bridge test can send
# dozens of events at once); Synapse's defaults (10 requests/s per origin before it starts
# delaying them) would slow such a test down for no reason.
_RELAXED_FEDERATION = {
    "window_size": 1000,
    "sleep_limit": 1000,
    "sleep_delay": 100,
    "reject_limit": 1000,
    "concurrent": 100,
}
# A few days: long enough for any test run or demo, short enough that a leaked data
# directory does not hold a long-lived key. Regenerated when less than a day is left.
_TLS_CERT_LIFETIME = datetime.timedelta(days=3)
_TLS_CERT_MIN_REMAINING = datetime.timedelta(days=1)


class HomeserverError(RuntimeError):
    """The local homeserver failed to start, stop or answer as expected."""


@dataclass(frozen=True)
class RegisteredUser:
    """A user created through the shared-secret admin registration API.

    The password is kept because tests log in again with it (for example after a restart,
    or to get a second device).
    """

    user_id: str
    access_token: str
    device_id: str
    password: str

    def __repr__(self) -> str:  # keep credentials out of assertion messages and logs
        return f"RegisteredUser(user_id={self.user_id!r}, device_id={self.device_id!r})"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now on ``host``.

    There is an unavoidable race between closing the probe socket and Synapse binding
    the port; if someone else grabs it, Synapse dies at start-up and ``start`` reports it
    with the log tail.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_busy(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something is listening on ``port``; SO_REUSEADDR as Twisted uses it, so a
    socket left in TIME_WAIT by our previous run does not count as busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# --------------------------------------------------------------------------------------
# Process bookkeeping shared with the atexit hook
# --------------------------------------------------------------------------------------

_live_lock = threading.Lock()
_live_processes: dict[int, subprocess.Popen[bytes]] = {}


def _leader_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the group leader has exited, *without* reaping it.

    Leaving the zombie in place keeps the process-group id reserved, so a following
    ``killpg`` can never hit an unrelated group that reused the number.
    """
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # already reaped elsewhere
        return True
    return info is not None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_now(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Synchronously terminate a Synapse process group: SIGTERM, then SIGKILL."""
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not _leader_exited(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
    # Whatever else is left in the group (the leader may be a zombie by now).
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with _live_lock:
        _live_processes.pop(proc.pid, None)


@atexit.register
def _kill_all_at_exit() -> None:
    """Last line of defence: never leave a Synapse behind when the interpreter exits."""
    with _live_lock:
        procs = list(_live_processes.values())
    for proc in procs:
        _kill_now(proc, grace=3.0)


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into a copy of ``base``; nested dicts merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


DEBUG_LOGGERS_ENV = "HOUSELINE_HS_DEBUG_LOGGERS"


def _debug_loggers() -> list[str]:
    """Synapse loggers to run at DEBUG, from a comma-separated environment variable.

    For chasing a homeserver-side problem in a bench or test run without editing code;
    ``synapse.storage.SQL`` stays at WARNING whatever is asked (it logs access tokens).
    """
    names = os.environ.get(DEBUG_LOGGERS_ENV, "")
    return [n.strip() for n in names.split(",") if n.strip() and n.strip() != "synapse.storage.SQL"]


def _random_secret() -> str:
    return secrets.token_urlsafe(32)


def _signing_key_line() -> str:
    """One line of Synapse's signing-key file: ``ed25519 <key id> <unpadded b64 seed>``.

    Any 32 random bytes are a valid ed25519 seed, so no crypto library is needed.
    """
    alphabet = string.ascii_letters + string.digits
    version = "a_" + "".join(secrets.choice(alphabet) for _ in range(4))
    seed = base64.b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return f"ed25519 {version} {seed}\n"


def _federation_address(address: str) -> str:
    """Validate the address of a federating server: an IPv4 loopback literal.

    IPv4 only, because an IPv6 literal would need brackets in the server name and ``::1``
    is the only IPv6 loopback address anyway; loopback only, because the certificate,
    the IP allow-list and the whole point of the sandbox assume nothing leaves the host.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"federation_address must be an IP literal, got {address!r}") from None
    if ip.version != 4 or not ip.is_loopback:
        raise ValueError(f"federation_address must be in 127.0.0.0/8, got {address!r}")
    return str(ip)


def _cert_usable(cert_path: Path, key_path: Path, address: str) -> bool:
    """Whether an existing certificate can be reused: present, for ``address``, and not
    about to expire."""
    from cryptography import x509

    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = san.get_values_for_type(x509.IPAddress)
    except (ValueError, x509.ExtensionNotFound):
        return False
    remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return ipaddress.ip_address(address) in ips and remaining > _TLS_CERT_MIN_REMAINING


def _write_self_signed_cert(cert_path: Path, key_path: Path, address: str) -> datetime.datetime:
    """Generate a self-signed EC P-256 certificate for the IP ``address``; return its expiry.

    ``cryptography`` is imported here rather than at module level: it is only needed in
    federating mode (it comes with Synapse), and the plain sandbox should stay light.
    EC rather than RSA because key generation is instant.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + _TLS_CERT_LIFETIME
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little: the peer's clock is the same, but TLS stacks reject a
        # certificate whose notBefore is even a second in the future.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    # The private key is written 0600 before any byte of it exists on disk.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return not_after


def _synapse_database(url: str) -> dict[str, Any]:
    """Synapse's ``database`` section for a ``postgres://user[:password]@host[:port]/name`` URL.

    A small connection pool is enough for one test server and keeps a throwaway cluster's
    connection count low; ``allow_unsafe_locale`` stays off so that a database created with
    the wrong collation fails at start-up instead of misbehaving later.
    """
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"database_url must be a postgres:// URL, got scheme {parts.scheme!r}")
    name = parts.path.lstrip("/")
    if not name or not parts.hostname:
        raise ValueError("database_url needs a host and a database name: postgres://user@host:port/name")
    args: dict[str, Any] = {"database": unquote(name), "host": parts.hostname, "cp_min": 2, "cp_max": 10}
    if parts.port is not None:
        args["port"] = parts.port
    if parts.username:
        args["user"] = unquote(parts.username)
    if parts.password:
        args["password"] = unquote(parts.password)
    return {"name": "psycopg2", "args": args, "allow_unsafe_locale": False}


def _tail(path: Path, start: int = 0, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written after byte offset ``start``."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return "<missing>"
    text = data.decode("utf-8", errors="replace").rstrip("\n")
    if not text:
        return "<empty>"
    return "\n".join(text.splitlines()[-lines:])


class LocalHomeserver:
    """One Synapse process on 127.0.0.1 with its state in ``data_dir``.

    The data directory survives ``stop``/``restart`` (database, media, signing key and
    secrets), which is what lets the fault suites kill the homeserver mid-flow and check
    that the bridge recovers against the same rooms and users.

    With ``federation_address="127.0.0.N"`` the server federates instead: it listens with
    TLS on that address, its server name is ``"127.0.0.N:<port>"`` and ``url`` is
    ``https://127.0.0.N:<port>``. Clients then pass ``client_ssl`` (aiohttp's and
    matrix-nio's ``ssl=``), which trusts this server's self-signed certificate. See the
    module docstring for why each federation setting is what it is.
    """

    def __init__(
        self,
        data_dir: Path,
        server_name: str = "localhost",
        port: int | None = None,
        app_service_config_files: list[Path] | None = None,
        extra_config: dict[str, Any] | None = None,
        *,
        log_level: str = "INFO",
        federation_address: str | None = None,
        database_url: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._database = _synapse_database(database_url) if database_url is not None else None
        if federation_address is not None and server_name != "localhost":
            # A custom name would need .well-known or SRV delegation to be reachable.
            raise ValueError("server_name is derived from federation_address and the port; do not pass both")
        self._federation_address = (
            _federation_address(federation_address) if federation_address is not None else None
        )
        self._server_name = server_name
        self._port = port
        self._client_ssl: ssl.SSLContext | None = None
        self.app_service_config_files = [Path(p).resolve() for p in (app_service_config_files or [])]
        self.extra_config = copy.deepcopy(extra_config or {})
        self.log_level = log_level
        self._registration_shared_secret: str | None = None
        self._secrets: dict[str, str] = {}
        self._config_written = False
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- public properties -----------------------------------------------------------

    @property
    def server_name(self) -> str:
        """The Matrix server name; in federating mode ``"<address>:<port>"``, so it is only
        known once the port is (given to the constructor, or chosen by ``start``)."""
        if self._federation_address is not None:
            return f"{self._federation_address}:{self.port}"
        return self._server_name

    @property
    def port(self) -> int:
        if self._port is None:
            raise HomeserverError("port is chosen when the config is written; call start() first")
        return self._port

    @property
    def federation_address(self) -> str | None:
        """The loopback address a federating server listens on, or None (plain mode)."""
        return self._federation_address

    @property
    def host(self) -> str:
        """The address the listener is bound to."""
        return self._federation_address or "127.0.0.1"

    @property
    def url(self) -> str:
        if self._federation_address is not None:
            return f"https://{self._federation_address}:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_certificate_path(self) -> Path | None:
        """The listener's self-signed certificate (PEM) in federating mode, else None.

        For clients that take a CA file rather than an ``ssl.SSLContext``.
        """
        if self._federation_address is None:
            return None
        return self.data_dir / TLS_CERT_FILE

    @property
    def client_ssl(self) -> ssl.SSLContext | None:
        """What a client passes as ``ssl=`` (aiohttp, matrix-nio) to talk to ``url``.

        None in plain mode (HTTP: nothing to configure). In federating mode an
        ``ssl.SSLContext`` that trusts exactly this server's certificate, hostname (IP)
        check included: pinning costs callers nothing more than ``ssl=False`` would, and
        a test then cannot silently talk to some other server that took the port.
        """
        if self._federation_address is None:
            return None
        if self._client_ssl is None:
            if not self._config_written:
                raise HomeserverError(
                    "the certificate is generated when the config is written; call start() first"
                )
            self._client_ssl = ssl.create_default_context(cafile=str(self.tls_certificate_path))
        return self._client_ssl

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        """Synapse's log file (the console output is next to it, in ``console_log_path``)."""
        return self.data_dir / LOG_FILE

    @property
    def console_log_path(self) -> Path:
        return self.data_dir / CONSOLE_LOG_FILE

    @property
    def pid(self) -> int | None:
        """Pid (and process-group id) of the running Synapse, or None when stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and not _leader_exited(self._proc)

    # ---- config ----------------------------------------------------------------------

    def _build_config(self) -> dict[str, Any]:
        assert self._port is not None and self._registration_shared_secret is not None
        data = self.data_dir
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": f"http://127.0.0.1:{self._port}/",
            "listeners": [
                {
                    "port": self._port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": copy.deepcopy(self._database)
            or {"name": "sqlite3", "args": {"database": str(data / DATABASE_FILE)}},
            "log_config": str(data / LOG_CONFIG_FILE),
            "media_store_path": str(data / MEDIA_STORE_DIR),
            "signing_key_path": str(data / SIGNING_KEY_FILE),
            "registration_shared_secret": self._registration_shared_secret,
            "macaroon_secret_key": self._secrets["macaroon_secret_key"],
            "form_secret": self._secrets["form_secret"],
            "app_service_config_files": [str(p) for p in self.app_service_config_files],
            "report_stats": False,
            "enable_registration": False,
            "enable_metrics": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            # Keep redacted originals: they are the record the bridge is audited against.
            "redaction_retention_period": None,
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            # Password hashing dominates register/login time; 4 is bcrypt's minimum and
            # is fine for a throwaway server.
            "bcrypt_rounds": 4,
            "rc_message": dict(_RELAXED),
            "rc_registration": dict(_RELAXED),
            "rc_registration_token_validity": dict(_RELAXED),
            "rc_login": {
                "address": dict(_RELAXED),
                "account": dict(_RELAXED),
                "failed_attempts": dict(_RELAXED),
            },
            "rc_joins": {"local": dict(_RELAXED), "remote": dict(_RELAXED)},
            "rc_joins_per_room": dict(_RELAXED),
            "rc_invites": {
                "per_room": dict(_RELAXED),
                "per_user": dict(_RELAXED),
                "per_issuer": dict(_RELAXED),
            },
            "rc_room_creation": dict(_RELAXED),
            "rc_admin_redaction": dict(_RELAXED),
            "rc_3pid_validation": dict(_RELAXED),
            "rc_media_create": dict(_RELAXED),
            "rc_profile": dict(_RELAXED),
            "rc_user_directory": dict(_RELAXED),
            "rc_delayed_event_mgmt": dict(_RELAXED),
            "rc_reports": dict(_RELAXED),
        }
        if self._federation_address is not None:
            config.update(self._federation_config())
        return _deep_merge(config, self.extra_config)

    def _federation_config(self) -> dict[str, Any]:
        """The keys that differ in federating mode (see the module docstring for why)."""
        assert self._port is not None and self._federation_address is not None
        address = self._federation_address
        return {
            "public_baseurl": f"https://{address}:{self._port}/",
            "listeners": [
                {
                    "port": self._port,
                    "bind_addresses": [address],
                    "type": "http",
                    "tls": True,
                    "x_forwarded": False,
                    "resources": [{"names": ["client", "federation"], "compress": False}],
                }
            ],
            "tls_certificate_path": str(self.data_dir / TLS_CERT_FILE),
            "tls_private_key_path": str(self.data_dir / TLS_KEY_FILE),
            "federation_verify_certificates": False,
            # Old option names on purpose: Synapse 1.163 ignores "ip_range_blocklist".
            # Federation (incl. key fetching) checks IP-literal destinations against the
            # blocklist only, so that list must be empty; everything else keeps the
            # default blocklist with loopback allowed back.
            "federation_ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.0/8"],
            "rc_federation": dict(_RELAXED_FEDERATION),
        }

    def _log_config(self) -> dict[str, Any]:
        return {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s"
                    " - %(request)s - %(message)s"
                }
            },
            "handlers": {
                # Unbuffered on purpose: the tail is read back when start-up fails.
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "loggers": {
                # DEBUG here would log SQL parameters, including access tokens.
                "synapse.storage.SQL": {"level": "WARNING"},
                **{name: {"level": "DEBUG"} for name in _debug_loggers()},
            },
            "root": {"level": self.log_level, "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def _write_config(self) -> None:
        """Write config, log config and signing key, keeping what a previous run left.

        Secrets, the port and the signing key are reused from an existing data directory:
        the database's tokens and event signatures depend on them.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / MEDIA_STORE_DIR).mkdir(exist_ok=True)
        previous: dict[str, Any] = {}
        if self.config_path.exists():
            loaded = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
            previous = loaded if isinstance(loaded, dict) else {}
            old_name = previous.get("server_name")
            if self._federation_address is None and old_name is not None and old_name != self._server_name:
                raise HomeserverError(
                    f"data dir {self.data_dir} belongs to server_name={old_name!r}, not {self._server_name!r}"
                )
        port = self._port
        if port is None:
            with contextlib.suppress(KeyError, IndexError, TypeError, ValueError):
                port = int(previous["listeners"][0]["port"])
        if port is None:
            port = free_port(self.host)
        if self._federation_address is not None:
            # The name embeds the port, so it can only be checked once the port is known;
            # the database (user ids, room ids, signatures) is tied to that name.
            new_name = f"{self._federation_address}:{port}"
            old_name = previous.get("server_name")
            if old_name is not None and old_name != new_name:
                raise HomeserverError(
                    f"data dir {self.data_dir} belongs to server_name={old_name!r}, not {new_name!r}"
                )
        self._port = port
        self._secrets = {
            key: str(previous.get(key) or _random_secret())
            for key in ("registration_shared_secret", "macaroon_secret_key", "form_secret")
        }
        self._registration_shared_secret = self._secrets["registration_shared_secret"]

        key_path = self.data_dir / SIGNING_KEY_FILE
        if not key_path.exists():
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(_signing_key_line())

        if self._federation_address is not None:
            self._ensure_tls_cert(self._federation_address)

        config = self._build_config()
        # Written 0600: the file holds the shared secret that creates admin users.
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)
        (self.data_dir / LOG_CONFIG_FILE).write_text(
            yaml.safe_dump(self._log_config(), sort_keys=False), encoding="utf-8"
        )
        self._config_written = True
        log.info(
            "homeserver_config_written data_dir=%s server_name=%s port=%d appservices=%d federating=%s",
            self.data_dir,
            self.server_name,
            self._port,
            len(self.app_service_config_files),
            self._federation_address is not None,
        )

    def _ensure_tls_cert(self, address: str) -> None:
        """Reuse the listener certificate if still good, otherwise generate a new one.

        Reuse matters because a client may already hold a ``client_ssl`` context that
        trusts it; after regeneration the cached context is dropped so the next
        ``client_ssl`` trusts the new certificate.
        """
        cert_path = self.data_dir / TLS_CERT_FILE
        key_path = self.data_dir / TLS_KEY_FILE
        if _cert_usable(cert_path, key_path, address):
            return
        not_after = _write_self_signed_cert(cert_path, key_path, address)
        self._client_ssl = None
        log.info(
            "homeserver_tls_cert_generated address=%s not_after=%s",
            address,
            not_after.isoformat(timespec="seconds"),
        )

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, timeout: float = 60) -> None:
        """Spawn Synapse and return once ``/_matrix/client/versions`` answers.

        Raises HomeserverError with the tail of Synapse's logs if the process dies first
        or does not answer within ``timeout`` seconds; the process is killed in both cases.
        """
        if self.running:
            raise HomeserverError(f"homeserver already running pid={self.pid}")
        if not self._config_written:
            self._write_config()
        if _port_busy(self.port, self.host):
            # Checked up front: a leftover server on our port would answer the readiness
            # probe while our own Synapse dies on bind.
            raise HomeserverError(
                f"port {self.port} is already in use (an orphaned synapse? see {self.data_dir / PID_FILE})"
            )

        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        console_offset = self.console_log_path.stat().st_size if self.console_log_path.exists() else 0
        began = time.monotonic()
        with self.console_log_path.open("ab") as console:
            proc = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the group
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        with _live_lock:
            _live_processes[proc.pid] = proc
        self._proc = proc
        (self.data_dir / PID_FILE).write_text(f"{proc.pid}\n", encoding="ascii")
        log.info("homeserver_spawned pid=%d url=%s", proc.pid, self.url)

        try:
            await self._wait_ready(proc, timeout)
        except BaseException as exc:
            # Includes CancelledError/KeyboardInterrupt: never leave a half-started server.
            _kill_now(proc, grace=2.0)
            self._proc = None
            if isinstance(exc, HomeserverError):
                raise HomeserverError(
                    f"{exc}\n--- {self.log_path.name} (tail) ---\n"
                    f"{_tail(self.log_path, log_offset)}\n"
                    f"--- {self.console_log_path.name} (tail) ---\n"
                    f"{_tail(self.console_log_path, console_offset)}"
                ) from None
            raise
        log.info(
            "homeserver_ready pid=%d url=%s elapsed_s=%.2f",
            proc.pid,
            self.url,
            time.monotonic() - began,
        )

    def _http_session(self, timeout: aiohttp.ClientTimeout | None = None) -> aiohttp.ClientSession:
        """A client session for our own calls, trusting the certificate in federating mode."""
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        context = self.client_ssl
        if context is not None:
            kwargs["connector"] = aiohttp.TCPConnector(ssl=context)
        return aiohttp.ClientSession(**kwargs)

    async def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        versions = f"{self.url}/_matrix/client/versions"
        async with self._http_session() as session:
            while True:
                if _leader_exited(proc):
                    proc.wait()
                    raise HomeserverError(
                        f"synapse exited during start-up rc={proc.returncode} data_dir={self.data_dir}"
                    )
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise HomeserverError(f"synapse did not answer {versions} within {timeout:.0f}s")
                try:
                    request_timeout = aiohttp.ClientTimeout(total=min(2.0, remaining))
                    async with session.get(versions, timeout=request_timeout) as resp:
                        if resp.status == 200:
                            await resp.read()
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass  # not listening yet
                await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))

    async def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL what is left.

        Idempotent. Raises HomeserverError only if even SIGKILL did not end the leader.
        """
        proc = self._proc
        if proc is None:
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        forced = False
        if not _leader_exited(proc):
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = began + timeout
            while not _leader_exited(proc) and loop.time() < deadline:
                await asyncio.sleep(0.05)
        if not _leader_exited(proc):
            forced = True
            log.warning("homeserver_stop_forced pid=%d after_s=%.1f", proc.pid, timeout)
        # Leader is gone or a zombie (group id still reserved): sweep the whole group.
        _signal_group(proc.pid, signal.SIGKILL)
        kill_deadline = loop.time() + 5.0
        while not _leader_exited(proc) and loop.time() < kill_deadline:
            await asyncio.sleep(0.05)
        if not _leader_exited(proc):
            raise HomeserverError(f"synapse pid={proc.pid} survived SIGKILL")
        proc.wait()
        with _live_lock:
            _live_processes.pop(proc.pid, None)
        self._proc = None
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / PID_FILE).unlink()
        log.info(
            "homeserver_stopped pid=%d rc=%s forced=%s elapsed_s=%.2f",
            proc.pid,
            proc.returncode,
            forced,
            loop.time() - began,
        )

    async def restart(self, timeout: float = 60) -> None:
        """Stop and start again on the same data directory, port and keys."""
        await self.stop()
        await self.start(timeout=timeout)

    async def __aenter__(self) -> LocalHomeserver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- users -----------------------------------------------------------------------

    async def register_user(
        self,
        localpart: str,
        password: str,
        admin: bool = False,
        *,
        displayname: str | None = None,
    ) -> RegisteredUser:
        """Create a user with the shared-secret admin registration API.

        This works with ``enable_registration: false``, which is how a company
        homeserver is run, so tests never need open registration.
        """
        if self._registration_shared_secret is None:
            raise HomeserverError("register_user() needs a started homeserver")
        endpoint = f"{self.url}/_synapse/admin/v1/register"
        timeout = aiohttp.ClientTimeout(total=_HTTP_TIMEOUT)
        async with self._http_session(timeout) as session:
            async with session.get(endpoint) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise HomeserverError(
                        f"register nonce failed status={resp.status} errcode={body.get('errcode')}"
                    )
                nonce = str(body["nonce"])
            mac = hmac.new(self._registration_shared_secret.encode("utf-8"), digestmod=hashlib.sha1)
            mac.update(nonce.encode("utf-8"))
            mac.update(b"\x00")
            mac.update(localpart.encode("utf-8"))
            mac.update(b"\x00")
            mac.update(password.encode("utf-8"))
            mac.update(b"\x00")
            mac.update(b"admin" if admin else b"notadmin")
            payload: dict[str, Any] = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            if displayname is not None:
                payload["displayname"] = displayname
            async with session.post(endpoint, json=payload) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise HomeserverError(
                        f"register failed localpart={localpart} status={resp.status}"
                        f" errcode={body.get('errcode')} error={body.get('error')}"
                    )
        user = RegisteredUser(
            user_id=body["user_id"],
            access_token=body["access_token"],
            device_id=body["device_id"],
            password=password,
        )
        log.info("homeserver_user_registered user_id=%s admin=%s", user.user_id, admin)
        return user
