"""``houseline demo``: the whole product on one machine, with a client who says hello.

Prints one JSON ``ready`` line on stdout once everything is up (with every demo account and its
password), then instructions for a person, written from that same line.
With ``--once`` it plays the employee too (matrix-nio), checks both directions and exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

import policies
from bridge.bridge import Bridge
from bridge.clock import CLOCK_FILE_ENV
from bridge.devstack import WHATSAPP_NUMBER, DevStack, start_dev_stack
from bridge.logs import setup_logging
from sandbox.client import SandboxClient
from sandbox.homeserver import RegisteredUser, free_port
from sandbox.receivers import SmtpArchive, WebhookReceiver
from sandbox.whatsapp.client import WhatsAppClient, text_of

CLIENT_ID = 4242001
#: The demo runs with the example policy: every rule kind on, with sensible defaults.
EXAMPLE_POLICY = Path(policies.__file__).resolve().parent / "example.yaml"
HELLO = "Hello! I'd like to talk about my portfolio."
ANSWER = "Hello Dana, happy to help. When would suit you for a call?"
WA_CLIENT_ID = "4915551234567"
WA_HELLO = "Hi, is the *fund* still open to new investors?"
WA_ANSWER = "Hi Wendy, yes it is. Shall I send you the factsheet?"
#: The LINE client: an alias the sandbox turns into a stable LINE user id (U + 32 hex digits).
LINE_CLIENT = "lin"
LINE_NAME = "Lin"
LINE_HELLO = "Hello, can I still change my savings plan this month?"
LINE_ANSWER = "Hello Lin, yes you can. Shall we go through it together?"
#: The demo's accounts, in the order they are listed, with what each is in the example policy
#: (``role``, None: none that lets them into client conversations) and what it is for.
ACCOUNTS: dict[str, tuple[str | None, str]] = {
    "employee": ("adviser", "adviser (wealth team); Dana, the first client, is theirs"),
    "adviser2": ("adviser", "adviser (wealth team); takes the next new client"),
    "senior": ("senior", "senior: group chats with clients need one present"),
    "admin": ("admin", "admin: bot commands in a DM with @houseline:localhost"),
    "compliance": ("observer", "compliance observer: reads everything, can't send"),
    "outsider": (None, "no role: refused in client conversations"),
}


async def run_demo(*, once: bool, workdir: Path | None) -> int:
    t0 = time.monotonic()
    setup_logging("WARNING" if once else "INFO")
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="houseline-demo-")
        workdir = Path(tmp.name)
    stack = await start_dev_stack(workdir, policy_file=EXAMPLE_POLICY)
    # The demo's bridge runs on a clock a person can move (reminders, absences, link expiry):
    # nobody should wait 15 minutes to see a reminder fire.
    clock = stack.workdir / "clock"
    clock.write_text("0")
    os.environ[CLOCK_FILE_ENV] = str(clock)
    systems = await _company_systems(stack)
    bridge = Bridge(stack.config, stack.registration)
    try:
        setup_logging(
            "WARNING" if once else "INFO",
            secrets=(
                stack.registration.as_token,
                stack.registration.hs_token,
                stack.telegram.token,
                *stack.config.network_secrets(),
            ),
        )
        await bridge.start()
        await stack.connect_whatsapp()
        await demo_client(stack).say(HELLO)
        ready = {**ready_line(stack), **systems.ready()}
        print(json.dumps(ready), flush=True)
        if once:
            return await _round_trip(stack, t0)
        print(instructions(ready, workdir=stack.workdir, elapsed=time.monotonic() - t0), flush=True)
        await _wait_for_signal()
        return 0
    finally:
        await bridge.stop()
        await systems.stop()
        await stack.stop()
        if tmp is not None:
            tmp.cleanup()


async def _round_trip(stack: DevStack, t0: float, timeout: float = 60.0) -> int:
    """Employee (matrix-nio) joins the portal, reads the hello, answers; the client gets it."""
    from sandbox.employee import Employee

    e = stack.employee
    employee = Employee(stack.homeserver.url, e.user_id, e.access_token, e.device_id)
    await employee.start()
    transcript = [f"client   -> company bot : {HELLO}"]
    try:
        room_id = await employee.wait_for_invite(timeout)
        await employee.join(room_id)
        hello = await employee.wait_for_message(HELLO, room_id, timeout=timeout)
        transcript.append(f"employee <- {hello.sender} in {room_id}: {HELLO}")
        await employee.send_text(room_id, ANSWER)
        transcript.append(f"employee -> portal      : {ANSWER}")
        got = await demo_client(stack).wait_for_text(ANSWER, timeout)
        transcript.append(f"client   <- company bot : {got['text']!r}")
        if stack.whatsapp is not None:
            # The same round trip on WhatsApp: another network through the same core.
            # The example policy hands new conversations round the team: this one goes to Alex.
            a = stack.extra_employees["adviser2"]
            adviser = Employee(stack.homeserver.url, a.user_id, a.access_token, a.device_id)
            await adviser.start()
            try:
                wa = WhatsAppClient(stack.whatsapp.url, WA_CLIENT_ID, "Wendy", WHATSAPP_NUMBER)
                await wa.say(WA_HELLO)
                transcript.append(f"client   -> WhatsApp {WHATSAPP_NUMBER}: {WA_HELLO}")
                wa_room = await adviser.wait_for_invite(timeout)
                await adviser.join(wa_room)
                seen = await adviser.wait_for_message(WA_HELLO, wa_room, timeout=timeout)
                transcript.append(f"adviser2 <- {seen.sender} in {wa_room}: {WA_HELLO}")
                await adviser.send_text(wa_room, WA_ANSWER)
                transcript.append(f"adviser2 -> portal      : {WA_ANSWER}")
                answer = await wa.wait_for_text(WA_ANSWER, timeout)
                transcript.append(f"client   <- WhatsApp {WHATSAPP_NUMBER}: {text_of(answer)!r}")
            finally:
                await adviser.close()
        if stack.line is not None:
            # And on LINE, with the very requests the instructions show (curl there). The third
            # new client: the round-robin is back at the employee.
            await line_say(stack.line.url, LINE_HELLO)
            transcript.append(f"client   -> LINE account: {LINE_HELLO}")
            line_room = await employee.wait_for_invite(timeout, exclude={room_id})
            await employee.join(line_room)
            seen = await employee.wait_for_message(LINE_HELLO, line_room, timeout=timeout)
            transcript.append(f"employee <- {seen.sender} in {line_room}: {LINE_HELLO}")
            await employee.send_text(line_room, LINE_ANSWER)
            transcript.append(f"employee -> portal      : {LINE_ANSWER}")
            got_line = await line_wait_for_text(stack.line.url, LINE_ANSWER, timeout)
            transcript.append(f"client   <- LINE account: {got_line!r}")
        print("\n".join(transcript))
        print(f"round trip OK in {time.monotonic() - t0:.1f}s (including start-up)", flush=True)
        return 0
    except AssertionError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1
    finally:
        await employee.close()


def demo_client(stack: DevStack) -> SandboxClient:
    return SandboxClient(stack.telegram.url, CLIENT_ID, "Dana", "Client", "dana_client")


async def line_say(line_url: str, text: str) -> dict:
    """The LINE client writes to the company's account: what the instructions' curl does."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.post(
            f"{line_url}/client/{LINE_CLIENT}/messages", json={"displayName": LINE_NAME, "text": text}
        ) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise AssertionError(f"the LINE sandbox refused the client's message: {resp.status} {body}")
            return body


async def line_wait_for_text(line_url: str, needle: str, timeout: float) -> str:
    """The first text the LINE client received from the account containing ``needle`` (the
    instructions' second curl, long-polling)."""
    deadline = time.monotonic() + timeout
    after = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout + 10)) as http:
        while time.monotonic() < deadline:
            async with http.get(f"{line_url}/client/{LINE_CLIENT}/messages?timeout=5{after}") as resp:
                messages = (await resp.json()).get("messages", [])
            for view in messages:
                text = (view.get("message") or {}).get("text") or ""
                if needle in text:
                    return text
            if messages:
                after = f"&after={messages[-1]['seq']}"
    raise AssertionError(f"the LINE client did not receive {needle!r} within {timeout:.0f}s")


def demo_accounts(stack: DevStack) -> dict[str, RegisteredUser]:
    """Every account of the demo company, employee first; each registered with its own password,
    new each run (bridge/devstack.py)."""
    users = {"employee": stack.employee, **stack.extra_employees}
    order = [name for name in ACCOUNTS if name in users] + [name for name in users if name not in ACCOUNTS]
    return {name: users[name] for name in order}


class CompanySystems:
    """The demo's stand-ins for a company's CRM and archive, and the API they are reached by."""

    def __init__(self, workdir: Path) -> None:
        self.token = secrets.token_urlsafe(32)
        self.api_port = free_port()
        self.receiver = WebhookReceiver(workdir / "webhooks", secrets.token_urlsafe(32))
        self.archive = SmtpArchive(workdir / "archive")

    async def start(self) -> None:
        await self.receiver.start()
        await self.archive.start()

    async def stop(self) -> None:
        await self.receiver.stop()
        await self.archive.stop()

    def sections(self) -> dict:
        return {
            "api": {"enabled": True, "listen_port": self.api_port, "tokens": [{"name": "demo", "token": self.token, "scopes": ["admin"]}]},
            "metrics": {"enabled": True},
            "webhooks": [{"name": "demo-crm", "url": self.receiver.url, "secret": self.receiver.secret, "events": ["*"]}],
            "archive": {"smtp": {"host": "127.0.0.1", "port": self.archive.port, "security": "none",
                                 "journal_address": "journal@archive.localhost", "sender": "houseline@localhost"}},
        }  # fmt: skip

    def ready(self) -> dict:
        base = f"http://127.0.0.1:{self.api_port}"
        return {
            "api": {"url": f"{base}/api/v1", "token": self.token},
            "metrics": f"{base}/metrics",
            "webhooks": str(self.receiver.folder),
            "archive": str(self.archive.folder),
        }


async def _company_systems(stack: DevStack) -> CompanySystems:
    """Starts the receivers and turns the bridge's integrations on in the demo's config."""
    systems = CompanySystems(stack.workdir)
    await systems.start()
    data = yaml.safe_load(stack.config_path.read_text())
    data.update(systems.sections())
    stack.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return systems


def ready_line(stack: DevStack) -> dict:
    """The ``ready`` event: where everything is and every account with its password."""
    accounts = demo_accounts(stack)
    e = accounts["employee"]
    return {
        "event": "ready",
        "homeserver": stack.homeserver.url,
        # Kept from before "accounts" existed: the same as accounts.employee without the role.
        "employee": {"user_id": e.user_id, "password": e.password},
        "accounts": {
            name: {"user_id": u.user_id, "password": u.password, "role": ACCOUNTS.get(name, (None, ""))[0]}
            for name, u in accounts.items()
        },
        "sandbox": {
            "telegram": stack.telegram.url,
            "telegram_bot_token": stack.telegram.token,
            "whatsapp": stack.whatsapp.url if stack.whatsapp else None,
            "line": stack.line.url if stack.line else None,
        },
        "config": str(stack.config_path),
    }


def instructions(ready: dict, *, workdir: Path, elapsed: float) -> str:
    """What a person reads after the ready line; every URL, account and password comes from it."""
    accounts = ready["accounts"]
    width = max(len(f"{a['user_id']} / {a['password']}") for a in accounts.values())
    listed = "\n".join(
        f"  {a['user_id'] + ' / ' + a['password']:<{width}}  {ACCOUNTS.get(name, (None, 'another demo user'))[1]}"
        for name, a in accounts.items()
    )
    employee, adviser2, admin = (
        accounts["employee"]["user_id"],
        accounts["adviser2"]["user_id"],
        accounts["admin"]["user_id"],
    )
    telegram, whatsapp = ready["sandbox"]["telegram"], ready["sandbox"]["whatsapp"] or ""
    line = ready["sandbox"].get("line") or ""
    return f"""
Houseline demo is running (ready in {elapsed:.1f}s). Ctrl-C stops everything.
Its files (config, policy, store, homeserver) are in {workdir}.

Log in to {ready["homeserver"]} with any Matrix client (Element: "Edit" the homeserver, then
sign in). The demo company's accounts (user / password, new each run):
{listed}

New clients go to the wealth team's two advisers in turn (round-robin): Dana went to
{employee}, so the next new client, on WhatsApp, LINE or Telegram, goes to
{adviser2}, the one after to {employee} again. Log in as both (a second
browser or a private window).

Be the employee: as {employee}, accept the invite to "Dana Client (Telegram)" and answer
the client.

Be a WhatsApp client (sandbox Cloud API; company numbers 1001 and 1002). Wendy is a new client:
as the first after Dana, "Wendy (WhatsApp)" goes to {adviser2}.
  curl -s -X POST {whatsapp}/client/{WA_CLIENT_ID}/messages \\
       -H 'content-type: application/json' -d '{{"to": "1001", "name": "Wendy", "text": "Hi *there*"}}'
  curl -s '{whatsapp}/client/{WA_CLIENT_ID}/messages?to=1001'

Be a LINE client (sandbox Messaging API; the company's LINE Official Account). "{LINE_CLIENT}" is
an alias the sandbox turns into a LINE user id; Lin is a new client too, so "{LINE_NAME} (LINE)"
goes to the adviser whose turn it is (see "A new client" below).
  curl -s -X POST {line}/client/{LINE_CLIENT}/messages \\
       -H 'content-type: application/json' -d '{{"displayName": "{LINE_NAME}", "text": "Hello from LINE"}}'
  curl -s {line}/client/{LINE_CLIENT}/messages      # what the client received
Pictures, stickers, locations, groups, unsend, blocking: sandbox/line/README.md (Control API).

Be the client (sandbox Telegram):
  curl -s -X POST {telegram}/client/{CLIENT_ID}/messages \\
       -H 'content-type: application/json' -d '{{"text": "Are you there?"}}'
  curl -s {telegram}/client/{CLIENT_ID}/messages      # what the client received

A new client: use another number in place of {CLIENT_ID} and add "first_name" to the JSON (on
LINE: another alias in place of "{LINE_CLIENT}", with its "displayName"; on WhatsApp: another number), then
look for the conversation as the adviser whose turn it is: {adviser2} if it is the
first new client after Dana (Wendy counts as one), {employee} if the second, and so on.

Nobody waits unanswered: a client message without an answer reminds the assignee after 15
minutes of business time, calls in the team after an hour, tells the seniors after four.
The bridge's timer clock can be moved ahead (seconds, read every second):
  echo 960 > {workdir / "clock"}      # 16 minutes on: the reminder fires
"!hl waiting" (in a direct chat with @houseline:localhost) lists who waits, oldest first.

Start a conversation (as an adviser, in a direct chat with @houseline:localhost):
  !hl contact whatsapp +49 155 5123 4567 template follow_up "Wendy"
  !hl invite telegram                     # a one-time link; open it as a client with
  curl -s -X POST {telegram}/client/4242009/start -H 'content-type: application/json' \\
       -d '{{"url": "<the link>", "first_name": "Lena"}}'

An absence: "!hl away --until <YYYY-MM-DD> --cover {adviser2}" as {employee}: new clients
skip them, {adviser2} covers their conversations and gets their reminders; "!hl back" reverts.

The company's other systems:{_systems(ready)}

Be the admin: log in as {admin}, start a direct chat with @houseline:localhost and send
"!hl help". The example policy ({EXAMPLE_POLICY}) is active: try sending the client a card
number as the employee, or "!hl offboard {employee} --to {adviser2}" as the admin.
The audit trail:
  houseline audit show -c {ready["config"]}
"""


def _systems(ready: dict) -> str:
    """The API, metrics, webhook receiver and archive lines of the instructions."""
    if "api" not in ready:
        return " (not started)"
    api = ready["api"]
    return f"""
  the HTTP API ({api["url"]}, token {api["token"]}; document: docs/openapi.yaml):
    curl -s -H 'Authorization: Bearer {api["token"]}' {api["url"]}/conversations
  Prometheus metrics: curl -s -H 'Authorization: Bearer {api["token"]}' {ready["metrics"]}
  a CRM receiving signed webhooks, one file per event:  ls {ready["webhooks"]}
  an SMTP archive receiving every message as EML:       ls {ready["archive"]}"""


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("houseline.demo").info("event=demo_stopping")
