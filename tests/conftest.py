"""Shared fixtures: one real stack per test session (sandbox Telegram + Synapse), a bridge
process per test that needs one, and a matrix-nio employee."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from bridge.devstack import DevStack, start_dev_stack
from sandbox.client import SandboxClient
from sandbox.employee import Employee

ROOT = Path(__file__).resolve().parent.parent


class BridgeProcess:
    """``houseline run`` as a child process, the way an operator runs it."""

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
    secrets = (
        stack.registration.as_token,
        stack.registration.hs_token,
        stack.telegram.token,
        *stack.config.network_secrets(),
    )
    leaked = [s for s in secrets if s in proc.output]
    assert not leaked, "a secret appeared in the bridge's log output"


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
