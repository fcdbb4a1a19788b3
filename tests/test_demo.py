"""`houseline demo --once` (what `make demo-once` runs): the whole stack comes up from nothing,
prints its ready line with the three sandboxes and every demo account, each printed password logs
in to the demo's homeserver, and the scripted round trips on Telegram, WhatsApp and LINE arrive
(LINE's with the requests the instructions show as curl)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

import aiohttp

from bridge.demo import LINE_ANSWER, LINE_CLIENT, LINE_HELLO, LINE_NAME, instructions

ROOT = Path(__file__).resolve().parent.parent
#: The accounts a newcomer needs (the example policy names them all), and what each is there.
ROLES = {
    "employee": "adviser",
    "adviser2": "adviser",
    "senior": "senior",
    "admin": "admin",
    "compliance": "observer",
}


async def _login(
    session: aiohttp.ClientSession, homeserver: str, user_id: str, password: str
) -> tuple[int, dict]:
    async with session.post(
        f"{homeserver}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        },
    ) as resp:
        return resp.status, await resp.json()


async def _check_logins(ready: dict) -> None:
    """A real password login for every account, as a person following the ready line would."""
    hs = ready["homeserver"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        accounts = list(ready["accounts"].items())
        results = await asyncio.gather(
            *(_login(session, hs, a["user_id"], a["password"]) for _, a in accounts)
        )
        for (name, account), (status, body) in zip(accounts, results):
            assert status == 200, f"{name}: login answered {status} {body.get('errcode')}"
            assert body["user_id"] == account["user_id"] and body["access_token"]
        # The check can fail: a wrong password is refused.
        employee = ready["accounts"]["employee"]
        status, body = await _login(session, hs, employee["user_id"], employee["password"] + "x")
        assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_demo_once_round_trips_on_every_network() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "demo",
        "--once",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.create_task(proc.stderr.read())
    lines: list[str] = []
    try:
        async with asyncio.timeout(240):
            ready = None
            while ready is None:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                lines.append(raw.decode(errors="replace").rstrip("\n"))
                if lines[-1].startswith('{"event": "ready"'):
                    ready = json.loads(lines[-1])
            assert ready is not None, (
                "\n".join(lines)[-3000:] + (await stderr).decode(errors="replace")[-3000:]
            )
            assert ready["sandbox"]["telegram"].startswith("http://127.0.0.1:")
            assert ready["sandbox"]["whatsapp"].startswith("http://127.0.0.1:")
            line_url = ready["sandbox"]["line"]
            assert line_url.startswith("http://127.0.0.1:")

            accounts = ready["accounts"]
            assert set(ROLES) <= set(accounts), sorted(accounts)
            for name, role in ROLES.items():
                assert accounts[name]["user_id"] == f"@{name}:localhost"
                assert accounts[name]["role"] == role and accounts[name]["password"]
            if "outsider" in accounts:
                assert accounts["outsider"]["role"] is None
            assert ready["employee"] == {k: accounts["employee"][k] for k in ("user_id", "password")}
            assert len({a["password"] for a in accounts.values()}) == len(accounts)

            # The company's systems are on: the API answers its printed token, metrics too.
            api = ready["api"]
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                auth = {"Authorization": f"Bearer {api['token']}"}
                async with http.get(f"{api['url']}/conversations", headers=auth) as resp:
                    assert resp.status == 200 and "conversations" in await resp.json()
                async with http.get(ready["metrics"], headers=auth) as resp:
                    assert resp.status == 200 and "houseline_messages_bridged_total" in await resp.text()
                async with http.get(ready["metrics"]) as resp:
                    assert resp.status == 401
            assert Path(ready["webhooks"]).is_dir() and Path(ready["archive"]).is_dir()

            # Hold the demo (not its Synapse, which runs in its own process group) while we log
            # in, so the round trip cannot finish and stop the homeserver under us.
            proc.send_signal(signal.SIGSTOP)
            try:
                await _check_logins(ready)
            finally:
                proc.send_signal(signal.SIGCONT)

            # The instructions the interactive demo prints are written from this same line.
            text = instructions(ready, workdir=Path(ready["config"]).parent, elapsed=1.0)
            for name, account in accounts.items():
                assert f"{account['user_id']} / {account['password']}" in text, name
            # How to play a LINE client, against the sandbox of this very run; the round trip
            # below sends exactly this request (bridge.demo.line_say) and polls the second.
            assert (
                f"curl -s -X POST {line_url}/client/{LINE_CLIENT}/messages \\\n"
                f"       -H 'content-type: application/json' -d "
                f'\'{{"displayName": "{LINE_NAME}", "text": "Hello from LINE"}}\''
            ) in text
            assert f"curl -s {line_url}/client/{LINE_CLIENT}/messages " in text
            new_client = text[text.index("A new client:") :].split("\n\n")[0]
            assert "@adviser2:localhost" in new_client and "@employee:localhost" in new_client

            lines += (await proc.stdout.read()).decode(errors="replace").splitlines()
            returncode = await proc.wait()
        assert returncode == 0, "\n".join(lines)[-3000:] + (await stderr).decode(errors="replace")[-3000:]
    finally:
        if proc.returncode is None:  # failed half-way: stop it the way Ctrl-C does, so Synapse goes too
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        stderr.cancel()
    assert any(
        line.startswith("client   <- company bot :") and "Erin Employee (Example Advisers)" in line
        for line in lines
    )
    assert any(
        line.startswith("client   <- WhatsApp 1001:") and "*Alex Adviser (Example Advisers)*" in line
        for line in lines
    )
    # The LINE client's message reached the employee (the third new client: the round-robin is
    # back at them), and the answer came back signed.
    assert f"client   -> LINE account: {LINE_HELLO}" in lines
    assert any(
        line.startswith("employee <- @line_") and line.endswith(f": {LINE_HELLO}") for line in lines
    ), lines
    assert (
        f"client   <- LINE account: {'Erin Employee (Example Advisers)' + chr(10) + LINE_ANSWER!r}" in lines
    )
    assert lines[-1].startswith("round trip OK")
