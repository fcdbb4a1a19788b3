"""Shared fixtures: one real stack per test session (sandbox Telegram + Synapse), a bridge
process per test that needs one (on the stack's store, or with a store of its own), and a
matrix-nio employee."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import aiohttp
import pytest
import yaml
from aiohttp import web

from bridge.config import load_config
from bridge.devstack import DevStack, start_dev_stack
from sandbox.client import SandboxClient
from sandbox.employee import Employee
from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent


class BridgeProcess:
    """``houseline run`` as a child process, the way an operator runs it."""

    #: Set by :func:`own_bridge`: the bridge's own store, policy file and clock file (None
    #: without one).
    db_path: Path
    policy_path: Path
    clock_path: Path | None = None

    def __init__(self, config_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        #: Extra environment (e.g. HOUSELINE_CLOCK_FILE, to move the bridge's timer clock).
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self, timeout: float = 60) -> None:
        self.lines.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "-c",
            str(self.config_path),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.env} if self.env else None,
        )
        self._reader = asyncio.create_task(self._read())
        await self.wait_for_log("event=ready", timeout)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._new_line.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_log(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if needle in line:
                    return line
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(
                    f"bridge exited ({self.proc.returncode}) before logging {needle!r}:\n{self.output[-4000:]}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"bridge did not log {needle!r} within {timeout}s:\n{self.output[-4000:]}"
                )
            self._new_line.clear()
            try:
                await asyncio.wait_for(self._new_line.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    async def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"bridge did not stop within {timeout}s of SIGTERM:\n{self.output[-4000:]}")
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    def advance(self, seconds: float) -> None:
        """Moves the bridge's timer clock (bridge.clock reads the file at every call); only for
        a bridge started with ``own_bridge(clock=True)``."""
        assert self.clock_path is not None, "a bridge without a clock file (own_bridge(clock=True))"
        now = float(self.clock_path.read_text() or 0)
        self.clock_path.write_text(str(now + seconds))

    def check_log(self) -> None:
        """What must not be in this bridge's output, checked by :func:`own_bridge` once it has
        stopped; subclasses add their own."""


def _assert_no_secrets(stack: DevStack, proc: BridgeProcess) -> None:
    """None of the stack's secrets, nor the bridge config's own (its API and metrics tokens,
    webhook secrets...), appears in the bridge's output."""
    secrets = (
        stack.registration.as_token,
        stack.registration.hs_token,
        stack.telegram.token,
        *load_config(proc.config_path).network_secrets(),
    )
    leaked = [s for s in secrets if s in proc.output]
    assert not leaked, "a secret appeared in the bridge's log output"


async def drain_telegram(stack: DevStack) -> list[dict[str, Any]]:
    """Confirms every update waiting in the sandbox Telegram's queue, as a Bot API client skips
    a backlog, and returns them: ``getUpdates`` with ``offset=0`` hands out what is pending (up
    to 100) without confirming anything; ``offset=N`` confirms every update below N and hands
    out the next; so each round passes the last id seen + 1, until nothing is handed out.

    An earlier bridge leaves updates unconfirmed when it was stopped or killed with them in
    hand; a bridge on a fresh store would take them as new conversations."""
    url = f"{stack.telegram.url}/bot{stack.telegram.token}"
    drained: list[dict[str, Any]] = []
    offset = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for _ in range(1000):
            async with http.post(f"{url}/getUpdates", json={"offset": offset, "timeout": 0}) as resp:
                body = await resp.json()
            if resp.status == 409 and "webhook is active" in body.get("description", ""):
                # Left registered by a bridge in webhook mode; a polling bridge deletes it when
                # it starts (keeping what is pending), and so does this.
                async with http.post(f"{url}/deleteWebhook", json={"drop_pending_updates": False}) as resp:
                    assert resp.status == 200, await resp.text()
                continue
            assert resp.status == 200 and body["ok"], (resp.status, body)
            if not body["result"]:
                return drained
            drained += body["result"]
            offset = body["result"][-1]["update_id"] + 1
    raise AssertionError(f"the sandbox Telegram kept handing out updates: {drained[-3:]}")


async def drain_whatsapp(stack: DevStack) -> list[dict[str, Any]]:
    """Takes the webhooks the sandbox WhatsApp still holds, and returns their payloads. As at
    Meta, a webhook is retried until it is answered 2xx and the later ones wait behind it; every
    bridge here listens on the stack's webhook URL, so what an earlier bridge never answered
    (it was stopped or killed first) would go to the next one. While one is pending, this
    answers them itself on that URL (the subscription handshake again, with the stack's verify
    token, makes the sandbox retry at once); nothing listens when none is pending."""
    wa = stack.config.network("whatsapp")
    if stack.whatsapp is None or wa is None:
        return []
    taken: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def done() -> bool:
            async with http.get(f"{stack.whatsapp.url}/control/state") as resp:
                return (await resp.json())["webhook"]["pending"] == 0

        if await done():
            return taken

        async def verify(request: web.Request) -> web.Response:
            if request.query.get("hub.verify_token") != wa.verify_token:
                return web.Response(status=403)
            return web.Response(text=request.query.get("hub.challenge", ""))

        async def take(request: web.Request) -> web.Response:
            taken.append(await request.json())
            return web.Response()

        app = web.Application()
        app.router.add_get(wa.path, verify)
        app.router.add_post(wa.path, take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, wa.listen_host, wa.listen_port).start()
            await stack.connect_whatsapp()
            await eventually(done, "the sandbox WhatsApp's pending webhooks")
        finally:
            await runner.cleanup()
    return taken


@pytest.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> DevStack:
    s = await start_dev_stack(tmp_path_factory.mktemp("stack"), policy_file=ROOT / "tests" / "policy.yaml")
    yield s
    await s.stop()


@pytest.fixture
async def bridge(stack: DevStack) -> BridgeProcess:
    proc = BridgeProcess(stack.config_path)
    await proc.start()
    await stack.connect_whatsapp()
    yield proc
    print(f"--- bridge output ---\n{proc.output}")  # shown by pytest only when the test failed
    if proc.proc is not None and proc.proc.returncode is None:
        code = await proc.stop()
        assert code == 0, f"bridge exited with {code} on SIGTERM:\n{proc.output[-4000:]}"
    _assert_no_secrets(stack, proc)


PolicyChange = Callable[[dict[str, Any]], None]
ConfigChange = Callable[[dict[str, Any]], None]


class BridgeFactory(Protocol):
    """:func:`own_bridge`'s ``start``."""

    async def __call__(
        self,
        *,
        policy: PolicyChange | None = None,
        config: ConfigChange | None = None,
        clock: bool = False,
        cls: type[BridgeProcess] | None = None,
        env: dict[str, str] | None = None,
    ) -> Any: ...


@pytest.fixture
async def own_bridge(stack: DevStack, tmp_path: Path) -> BridgeFactory:
    """A bridge of the test's own: the stack's config with a store of its own (SQLite,
    ``proc.db_path``) and a copy of tests/policy.yaml (``proc.policy_path``). ``await
    own_bridge(...)`` starts it (and connects the WhatsApp sandbox to it); called again, it
    restarts the same bridge: same store, policy file, config and clock.

    Each call changes only what it names, everything else stays as the start before had it:

    - ``policy``: a function changing the parsed policy (applied to the policy file as it is);
    - ``config``: a function changing the parsed config (applied to the config as it is);
    - ``clock=True``: a clock file (``proc.clock_path``, HOUSELINE_CLOCK_FILE, from 0) that
      ``proc.advance(seconds)`` moves; kept for every later start;
    - ``cls``: the BridgeProcess subclass to start (for its helpers); BridgeProcess until given;
    - ``env``: more environment for the process.

    The store being fresh, what an earlier test's bridge left in the sandboxes (Telegram updates
    unconfirmed, WhatsApp webhooks unanswered) is drained first (:func:`drain_telegram`,
    :func:`drain_whatsapp`): it is not this test's, and would make conversations here. At
    teardown every bridge still running is stopped with SIGTERM and must exit 0; each one's
    output is printed (pytest shows it for a failed test) and must hold no secret."""
    procs: list[BridgeProcess] = []
    db_path, policy_path, clock_path = tmp_path / "bridge.db", tmp_path / "policy.yaml", tmp_path / "clock"
    shutil.copy(ROOT / "tests" / "policy.yaml", policy_path)
    # Next to the stack's config: the relative paths in it (the registration) resolve the same.
    config_path = stack.config_path.with_name(f"config-{tmp_path.name}.yaml")
    settings = yaml.safe_load(stack.config_path.read_text())
    settings["policies"] = {"file": str(policy_path)}
    settings["database"] = {"url": f"sqlite:{db_path}"}
    config_path.write_text(yaml.safe_dump(settings))
    kept: dict[str, Any] = {"cls": BridgeProcess, "env": {}}
    drained = await drain_telegram(stack)
    if drained:
        print(f"drained {len(drained)} Telegram update(s) an earlier bridge left unconfirmed: {drained}")
    taken = await drain_whatsapp(stack)
    if taken:
        print(f"drained {len(taken)} WhatsApp webhook(s) an earlier bridge left undelivered: {taken}")

    async def start(
        *,
        policy: PolicyChange | None = None,
        config: ConfigChange | None = None,
        clock: bool = False,
        cls: type[BridgeProcess] | None = None,
        env: dict[str, str] | None = None,
    ) -> Any:
        if policy is not None:
            rules = yaml.safe_load(policy_path.read_text())
            policy(rules)
            policy_path.write_text(yaml.safe_dump(rules))
        if config is not None:
            config(settings)
            config_path.write_text(yaml.safe_dump(settings))
        if clock and not clock_path.exists():
            clock_path.write_text("0")
        kept["cls"] = cls or kept["cls"]
        kept["env"] = {**kept["env"], **(env or {})}
        if clock_path.exists():
            kept["env"]["HOUSELINE_CLOCK_FILE"] = str(clock_path)
        proc = kept["cls"](config_path, env=kept["env"] or None)
        proc.db_path, proc.policy_path = db_path, policy_path
        proc.clock_path = clock_path if clock_path.exists() else None
        procs.append(proc)  # before it starts: one that never got ready is stopped and shown too
        await proc.start()
        await stack.connect_whatsapp()
        return proc

    yield start
    unclean = []
    for proc in procs:
        if proc.proc is not None and proc.proc.returncode is None:
            try:
                code = await proc.stop()
            except AssertionError as e:  # did not stop in time (and was killed)
                unclean.append(str(e))
                continue
            if code != 0:
                unclean.append(f"bridge exited with {code} on SIGTERM:\n{proc.output[-4000:]}")
    for proc in procs:
        print(f"--- bridge output ---\n{proc.output}")  # shown by pytest only when the test failed
    assert not unclean, "\n\n".join(unclean)
    for proc in procs:
        _assert_no_secrets(stack, proc)
        proc.check_log()


@pytest.fixture(scope="session")
async def employee(stack: DevStack) -> Employee:
    e = stack.employee
    emp = Employee(stack.homeserver.url, e.user_id, e.access_token, e.device_id, auto_join=True)
    await emp.start()
    yield emp
    await emp.close()


@pytest.fixture(scope="session")
async def staff(stack: DevStack) -> dict[str, Employee]:
    """The demo company's other people (admin, compliance, senior, adviser2, outsider), each on
    their own matrix-nio client; they join only when a test tells them to."""
    people: dict[str, Employee] = {}
    for name, user in stack.extra_employees.items():
        person = Employee(stack.homeserver.url, user.user_id, user.access_token, user.device_id)
        await person.start()
        people[name] = person
    yield people
    for person in people.values():
        await person.close()


_client_ids = itertools.count(7_100_000_001 + (os.getpid() % 1000) * 1000)


@pytest.fixture
def new_client(stack: DevStack):
    """A fresh client (a Telegram user never seen before) for each call."""

    def make(first_name: str = "Dana", last_name: str | None = "Client") -> SandboxClient:
        return SandboxClient(stack.telegram.url, next(_client_ids), first_name, last_name)

    return make
