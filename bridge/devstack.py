"""A complete local stack for the demo, the tests and the benchmarks.

Sandbox Telegram, a throwaway Synapse that loads our registration, an employee account, and a
bridge config pointing at all of them. The bridge itself is started by the caller: in-process
for the demo, as a child process in the tests (so they can stop and kill it like an operator).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from appservice.registration import Registration, build_registration, write_registration
from bridge.config import Config, load_config
from sandbox.homeserver import LocalHomeserver, RegisteredUser, free_port
from sandbox.line import LineSandbox
from sandbox.telegram import TelegramSandbox
from sandbox.whatsapp import SandboxNumber, WhatsAppSandbox

DOMAIN = "localhost"
EMPLOYEE_LOCALPART = "employee"
COMPANY = "Example Advisers"
#: The company's WhatsApp Business numbers in the sandbox (phone number id, display number): the
#: advisory desk's main line and a second one (several numbers at once, as companies have).
WHATSAPP_NUMBER = "1001"
WHATSAPP_DISPLAY_NUMBER = "+1 555 0100"
WHATSAPP_SECOND_NUMBER = "1002"
WHATSAPP_SECOND_DISPLAY_NUMBER = "+1 555 0102"


@dataclass
class DevStack:
    workdir: Path
    telegram: TelegramSandbox
    homeserver: LocalHomeserver
    employee: RegisteredUser
    config_path: Path
    registration: Registration
    extra_employees: dict[str, RegisteredUser] = field(default_factory=dict)
    whatsapp: WhatsAppSandbox | None = None
    line: LineSandbox | None = None

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    async def connect_whatsapp(self) -> None:
        """Point the sandbox's webhooks at the running bridge (Meta's subscription handshake).
        Messages clients send before this wait in the sandbox, as they would at Meta."""
        wa = self.config.network("whatsapp")
        if self.whatsapp is None or wa is None:
            return
        await self.whatsapp.subscribe(f"http://{wa.listen_host}:{wa.listen_port}{wa.path}", wa.verify_token)

    async def stop(self) -> None:
        await self.homeserver.stop()
        await self.telegram.stop()
        if self.whatsapp is not None:
            await self.whatsapp.stop()
        if self.line is not None:
            await self.line.stop()


#: The people of the demo company besides the employee (the example policy names them).
EXTRA_USERS = {
    "admin": "Ada Admin",
    "compliance": "Carl Compliance",
    "senior": "Sam Senior",
    "adviser2": "Alex Adviser",
    "outsider": "Oscar Outsider",
}


def write_bridge_config(
    workdir: Path,
    *,
    homeserver_url: str,
    as_port: int,
    telegram: TelegramSandbox,
    invite: list[str],
    policy_file: Path | None = None,
    database_url: str = "sqlite:houseline.db",
    whatsapp: WhatsAppSandbox | None = None,
    line: LineSandbox | None = None,
) -> Path:
    config = {
        "homeserver": {"url": homeserver_url, "domain": DOMAIN},
        "appservice": {
            "host": "127.0.0.1",
            "port": as_port,
            "address": f"http://127.0.0.1:{as_port}",
            "id": "houseline",
            "bot_localpart": "houseline",
            "bot_displayname": "Houseline",
            "ghost_localpart_template": "{network}_{id}",
            "registration": "registration.yaml",
        },
        "database": {"url": database_url},
        "networks": {
            "telegram": {
                "enabled": True,
                "bot_token": telegram.token,
                "polling": {"timeout": 10},
                "base_url": f"{telegram.url}/bot",
                "base_file_url": f"{telegram.url}/file/bot",
            }
        },
        "portals": {"invite": invite, "company": COMPANY, "signature": "{displayname} ({company})"},
        "logging": {"level": "INFO", "format": "keyvalue"},
    }
    if whatsapp is not None:
        config["networks"]["whatsapp"] = {
            "enabled": True,
            "graph_url": whatsapp.graph_url,
            "app_secret": whatsapp.app_secret,
            "verify_token": secrets.token_urlsafe(24),
            "webhook": {"listen_host": "127.0.0.1", "listen_port": free_port(), "path": "/whatsapp/webhook"},
            "numbers": [
                {
                    "phone_number_id": number,
                    "access_token": whatsapp.access_token,
                    "waba_id": whatsapp.waba_id,
                }
                for number in (WHATSAPP_NUMBER, WHATSAPP_SECOND_NUMBER)
            ],
        }
    if line is not None:
        port = free_port()
        config["networks"]["line"] = {
            "enabled": True,
            "channel_secret": line.channel_secret,
            "channel_access_token": line.channel_access_token,
            "api_url": line.api_url,
            "data_url": line.data_url,
            # The bridge registers this as the channel's webhook URL at start, as on LINE.
            "webhook": {
                "listen_host": "127.0.0.1",
                "listen_port": port,
                "path": "/line/webhook",
                "public_url": f"http://127.0.0.1:{port}/line/webhook",
            },
        }
    if policy_file is not None:
        config["policies"] = {"file": str(policy_file)}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


async def start_dev_stack(
    workdir: Path,
    *,
    rate_limits: bool = True,
    policy_file: Path | None = None,
    bridge_database_url: str | None = None,
    homeserver_database_url: str | None = None,
) -> DevStack:
    """The whole local stack; SQLite for both databases unless the bench's PostgreSQL pass
    passes URLs (bench/postgres.py makes them)."""
    workdir.mkdir(parents=True, exist_ok=True)
    telegram = TelegramSandbox(rate_limits=rate_limits, allow_local_webhooks=True, webhook_retry_initial=0.2)
    await telegram.start()
    whatsapp = WhatsAppSandbox(
        access_token=secrets.token_urlsafe(32),
        app_secret=secrets.token_urlsafe(32),
        numbers=[
            SandboxNumber(
                phone_number_id=WHATSAPP_NUMBER,
                display_phone_number=WHATSAPP_DISPLAY_NUMBER,
                verified_name=COMPANY,
            ),
            SandboxNumber(
                phone_number_id=WHATSAPP_SECOND_NUMBER,
                display_phone_number=WHATSAPP_SECOND_DISPLAY_NUMBER,
                verified_name=COMPANY,
            ),
        ],
        throughput_limits=rate_limits,
    )
    await whatsapp.start()
    # Webhook redelivery switched on, for about a minute: a bridge restarting (the fault suite
    # kills it) gets what LINE could not deliver meanwhile.
    line = LineSandbox(
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(32),
        rate_limits=rate_limits,
        display_name=COMPANY,
        webhook_max_redeliveries=60,
    )
    await line.start()
    try:
        hs_port, as_port = free_port(), free_port()
        employee_id = f"@{EMPLOYEE_LOCALPART}:{DOMAIN}"
        config_path = write_bridge_config(
            workdir,
            homeserver_url=f"http://127.0.0.1:{hs_port}",
            as_port=as_port,
            telegram=telegram,
            invite=[employee_id],
            policy_file=policy_file,
            database_url=bridge_database_url or "sqlite:houseline.db",
            whatsapp=whatsapp,
            line=line,
        )
        config = load_config(config_path)
        registration = build_registration(
            as_id=config.appservice.id,
            url=config.appservice.address,
            bot_localpart=config.appservice.bot_localpart,
            domain=DOMAIN,
            ghost_regex=config.ghost_namer().namespace_regex,
            existing=config.appservice.registration,
        )
        write_registration(registration, config.appservice.registration)
        homeserver = LocalHomeserver(
            workdir / "synapse",
            server_name=DOMAIN,
            port=hs_port,
            app_service_config_files=[config.appservice.registration],
            database_url=homeserver_database_url,
        )
        await homeserver.start()
    except BaseException:
        await telegram.stop()
        await whatsapp.stop()
        await line.stop()
        raise
    try:
        employee = await homeserver.register_user(
            EMPLOYEE_LOCALPART, secrets.token_urlsafe(12), displayname="Erin Employee"
        )
        extra = {
            name: await homeserver.register_user(name, secrets.token_urlsafe(12), displayname=display)
            for name, display in EXTRA_USERS.items()
        }
    except BaseException:
        await homeserver.stop()
        await telegram.stop()
        await whatsapp.stop()
        await line.stop()
        raise
    return DevStack(workdir, telegram, homeserver, employee, config_path, registration, extra, whatsapp, line)
