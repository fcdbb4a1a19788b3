"""The benchmark: `python -m bench.run` (what `make bench` calls).

Starts the local stack (Synapse on SQLite and the sandbox Telegram, driven from this process; the
bridge as its own process, `houseline run`, as deployed: see bench/child.py), measures, prints a
table and writes bench/results.json. Every figure is the median of 3 runs (min, max kept).
Then, where PostgreSQL is installed, the throughput/latency set again with the bridge's store and
Synapse on a throwaway PostgreSQL cluster (bench/postgres.py): figures named ``..._pg``, in a
second table. Everything on loopback; every loop is bounded in count and time.

Env knobs (optional): BENCH_RUNS (3), BENCH_PG_RUNS (3; fewer shortens the PostgreSQL pass, which
takes about 2.5 of the bench's 6 minutes), BENCH_PG (1; 0 skips the PostgreSQL pass), BENCH_SCALE
(1.0, multiplies message counts).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp
import yaml

from bench.child import BridgeChild
from bench.cpu import CpuPairs, classify, record, thread_cpu, thread_cpu_delta
from bench.measure import Figure, environment, percentile, rss_mb, table

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PG_RUNS = int(os.environ.get("BENCH_PG_RUNS", "3"))
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))
CONCURRENCY = (1, 10, 100)
#: messages per run at each concurrency (inbound, ceiling and outbound alike): runs of 1-5 s, so
#: the pipeline's drain at the end of a run (the last messages' own latency, about 0.3-0.5 s at
#: c=100) does not decide the rate; that latency is measured on its own (latency_*)
MESSAGES = {1: int(40 * SCALE), 10: int(200 * SCALE), 100: int(500 * SCALE)}
#: outbound throughput runs turn the bridge's pacing off like the sandbox's limits (the limits run measures pacing)
OUT_MESSAGES = dict(MESSAGES)
WAIT_LIMIT = 120.0  # seconds, for any single "until everything arrived" wait
TYPICAL_TEXT = (
    "Good morning, thanks for sending the quarterly statement. I had a look at the allocation "
    "and would like to talk about moving part of the bond fund into equities before the end of the month."
)[:200].ljust(200, ".")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# 1. policy decisions


def bench_policy() -> Figure:
    from policies.engine import RoomState, SendOut, decide
    from bridge.networks import network_names
    from policies.model import parse_policy

    policy = parse_policy(
        yaml.safe_load((REPO / "policies" / "example.yaml").read_text()),
        local_domain="localhost",
        networks=network_names(),
    )
    room = RoomState(
        room_id="!portal:localhost",
        members=frozenset(
            {
                "@houseline:localhost",
                "@telegram_123:localhost",
                "@employee:localhost",
                "@compliance:localhost",
            }
        ),
        ghosts=frozenset({"@telegram_123:localhost"}),
    )
    action = SendOut(sender="@employee:localhost", room=room, kind="text", text=TYPICAL_TEXT)
    first = decide(action, policy)
    assert first.allowed, f"the typical message should be allowed, got {first}"
    try:  # one core: pin this process while measuring
        old_affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(old_affinity)})
    except (AttributeError, OSError):
        old_affinity = None
    values = []
    try:
        for _ in range(200):
            decide(action, policy)
        for _ in range(RUNS):
            n, t0 = 0, time.perf_counter()
            while n < 2_000_000:
                for _ in range(1000):
                    decide(action, policy)
                n += 1000
                if time.perf_counter() - t0 >= 1.0:
                    break
            values.append(n / (time.perf_counter() - t0))
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
    return Figure(
        "policy_decisions_per_s",
        values,
        "decisions/s",
        note="SendOut text, 200 chars, example policy, one pinned core; moves with the machine, so "
        "rated as policy_cost_ratio instead",
    )


def _per_call_s(call: Callable[[], object], seconds: float = 1.0) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            call()
        n += 200
    return (time.perf_counter() - t0) / n


def bench_supervision() -> list[Figure]:
    """The lexicon check as a ratio to the sharing decision on the same text, both in this
    process on one pinned core (absolute rates move with the machine, ratios much less)."""
    from bridge.networks import network_names
    from policies.engine import RoomState, SendOut, Supervise, decide, supervise
    from policies.model import parse_policy

    policy = parse_policy(
        yaml.safe_load((REPO / "policies" / "example.yaml").read_text()),
        local_domain="localhost",
        networks=network_names(),
    )
    room = RoomState(room_id="!portal:localhost", members=frozenset({"@employee:localhost"}))
    share = SendOut(sender="@employee:localhost", room=room, kind="text", text=TYPICAL_TEXT)
    typical = Supervise(TYPICAL_TEXT, "outbound", "$typical")
    hit = Supervise("We guarantee you a 12% return every year, you cannot lose.", "outbound", "$hit")
    assert not supervise(typical, policy).review and supervise(hit, policy).hold
    try:
        old_affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(old_affinity)})
    except (AttributeError, OSError):
        old_affinity = None
    typical_ratio, hit_ratio = [], []
    try:
        for _ in range(RUNS):
            base = _per_call_s(lambda: decide(share, policy))
            typical_ratio.append(_per_call_s(lambda: supervise(typical, policy)) / base)
            hit_ratio.append(_per_call_s(lambda: supervise(hit, policy)) / base)
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
    return [
        Figure(
            "supervision_ratio_to_sharing_decision",
            typical_ratio,
            "ratio",
            "<= 1.5",
            lambda v: v <= 1.5,
            note="supervise() / decide(SendOut) on the same 200-char message without hits, example policy",
        ),
        Figure(
            "supervision_ratio_to_sharing_decision_on_a_hit",
            hit_ratio,
            "ratio",
            note="a held promise of returns: the hit's excerpt and exclusions cost more",
        ),
    ]


# --------------------------------------------------------------------------------------------
# Matrix helpers (raw client-server API, appservice token with ?user_id=)


class Matrix:
    def __init__(self, http: aiohttp.ClientSession, base: str, as_token: str, bot: str) -> None:
        self.http, self.base, self.as_token, self.bot = http, base.rstrip("/"), as_token, bot

    async def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        user: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        url = f"{self.base}/_matrix/client/v3{path}"
        params = {"user_id": user} if user else None
        headers = {"Authorization": f"Bearer {token or self.as_token}"}
        for attempt in range(20):  # bounded retry on 429 only
            async with self.http.request(
                method, url, json=body if body is not None else {}, params=params, headers=headers
            ) as r:
                data = await r.json(content_type=None)
                if r.status == 429:
                    await asyncio.sleep(min(2.0, (data.get("retry_after_ms") or 200) / 1000))
                    continue
                if r.status >= 400:
                    raise RuntimeError(f"{method} {path} -> {r.status} {data}")
                return data
        raise RuntimeError(f"{method} {path}: still rate limited after 20 attempts")

    async def register_ghost(self, localpart: str) -> None:
        try:
            await self.call(
                "POST", "/register", {"type": "m.login.application_service", "username": localpart}
            )
        except RuntimeError as e:
            if "M_USER_IN_USE" not in str(e):
                raise

    async def send(self, room: str, text: str, *, user: str | None = None, token: str | None = None) -> str:
        txn = uuid.uuid4().hex
        data = await self.call(
            "PUT",
            f"/rooms/{quote(room)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": text},
            user=user,
            token=token,
        )
        return data["event_id"]


async def gather_bounded(coros: list, limit: int) -> list:
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


# --------------------------------------------------------------------------------------------
# 2. ceiling: ghosts sending directly through the appservice API


async def setup_ceiling_rooms(mx: Matrix, domain: str, count: int) -> list[tuple[str, str]]:
    async def one(i: int) -> tuple[str, str]:
        localpart = f"telegram_{8_800_000 + i}"
        ghost = f"@{localpart}:{domain}"
        await mx.register_ghost(localpart)
        room = (
            await mx.call(
                "POST",
                "/createRoom",
                {
                    "preset": "private_chat",
                    "name": f"ceiling {i}",
                    "invite": [ghost],
                    "is_direct": False,
                },
                user=mx.bot,
            )
        )["room_id"]
        await mx.call("POST", f"/rooms/{quote(room)}/join", {}, user=ghost)
        return room, ghost

    return await gather_bounded([one(i) for i in range(count)], 10)


async def ceiling_run(
    mx: Matrix, rooms: list[tuple[str, str]], concurrency: int, messages: int
) -> tuple[float, list[float]]:
    per = max(1, messages // concurrency)  # BENCH_SCALE below 1 must not make a run empty
    durations: list[float] = []

    async def worker(room: str, ghost: str) -> None:
        for k in range(per):
            t = time.perf_counter()
            await mx.send(room, f"ceiling {k} {TYPICAL_TEXT[:60]}", user=ghost)
            durations.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(r, g) for r, g in rooms[:concurrency])), WAIT_LIMIT)
    return per * concurrency / (time.perf_counter() - t0), durations


# --------------------------------------------------------------------------------------------
# 3./5. inbound


async def client_say(http: aiohttp.ClientSession, sandbox: str, user_id: int, name: str, text: str) -> dict:
    async with http.post(
        f"{sandbox}/client/{user_id}/messages", json={"text": text, "first_name": name}
    ) as r:
        data = await r.json()
        if r.status != 200:
            raise RuntimeError(f"client {user_id} -> {r.status} {data}")
        return data


async def inbound_run(
    http, sandbox: str, commits: BridgeChild, users: list[int], concurrency: int, messages: int
) -> float:
    per = max(1, messages // concurrency)  # BENCH_SCALE below 1 must not make a run empty
    base = commits.count("in")

    async def worker(uid: int) -> None:
        for k in range(per):
            await client_say(http, sandbox, uid, f"Client{uid}", f"in {k} {TYPICAL_TEXT[:60]}")

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(u) for u in users[:concurrency])), WAIT_LIMIT)
    t1 = await commits.wait_count("in", base + per * concurrency, WAIT_LIMIT)
    return per * concurrency / (t1 - t0)


async def latency_run(
    http,
    sandbox: str,
    commits: BridgeChild,
    users: list[int],
    mx: Matrix,
    rooms: list[tuple[str, str]],
    messages: int = 60,
) -> tuple[list[float], list[float]]:
    """One message at a time (light load): ms from the client's POST to the bridge's commit of
    it, and, interleaved with those under the same load, ms of a ghost's own send through the
    appservice API (the homeserver's part, subtracted by the caller)."""
    end_to_end: list[float] = []
    homeserver: list[float] = []
    for i in range(messages):
        uid = users[i % len(users)]
        t0 = time.perf_counter()
        answer = await client_say(http, sandbox, uid, f"Client{uid}", f"latency {i}")
        committed = await commits.wait_row("in", str(answer["chat_id"]), str(answer["message_id"]), 10)
        end_to_end.append((committed - t0) * 1000)
        room, ghost = rooms[i % len(rooms)]
        t0 = time.perf_counter()
        await mx.send(room, f"latency probe {i}", user=ghost)
        homeserver.append((time.perf_counter() - t0) * 1000)
    return end_to_end, homeserver


# --------------------------------------------------------------------------------------------
# 4. outbound


async def outbound_run(
    mx: Matrix, commits: BridgeChild, rooms: list[str], token: str, concurrency: int, messages: int
) -> float:
    per = max(1, messages // concurrency)  # BENCH_SCALE below 1 must not make a run empty
    base = commits.count("out")

    async def worker(room: str) -> None:
        for k in range(per):
            await mx.send(room, f"out {k} {TYPICAL_TEXT[:60]}", token=token)

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(r) for r in rooms[:concurrency])), WAIT_LIMIT)
    t1 = await commits.wait_count("out", base + per * concurrency, WAIT_LIMIT)
    return per * concurrency / (t1 - t0)


# --------------------------------------------------------------------------------------------
# 6. 10k portals: startup time and memory of `houseline run` as a child


async def build_10k_db(path: Path, n: int = 10_000) -> float:
    from bridge.store.store import PortalRow, Store

    store = Store(f"sqlite:{path}")
    await store.start()
    t0 = time.perf_counter()
    try:
        await store.db.execute("PRAGMA synchronous=OFF")
    except Exception:  # noqa: BLE001 - speed-up only
        pass
    for i in range(n):
        await store.add_portal(
            PortalRow("telegram", "bench", str(10_000_000 + i), f"!fake{i:05d}:localhost", f"Client {i}")
        )
    await store.stop()
    return time.perf_counter() - t0


async def child_ready_run(
    config_src: Path, workdir: Path, db_template: Path, run: int, without: tuple[str, ...] = ()
) -> tuple[float, float]:
    """Seconds to ``event=ready`` and RSS of a child over ``db_template``; ``without``: networks
    switched off in its config (to show what one network's library costs at start)."""
    from sandbox.homeserver import free_port

    rundir = workdir / f"child{run}{'-'.join(('', *without))}"
    rundir.mkdir(parents=True, exist_ok=True)
    db = rundir / "houseline.db"
    shutil.copy(db_template, db)
    cfg = yaml.safe_load(config_src.read_text())
    port = free_port()
    cfg["appservice"]["port"] = port
    cfg["appservice"]["address"] = f"http://127.0.0.1:{port}"
    reg = Path(cfg["appservice"]["registration"])
    cfg["appservice"]["registration"] = str(reg if reg.is_absolute() else config_src.parent / reg)
    cfg["database"]["url"] = f"sqlite:{db}"
    cfg["logging"] = {"level": "INFO", "format": "keyvalue"}
    for name in without:
        cfg["networks"].pop(name, None)
    cfg_path = rundir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cfg_path.chmod(0o600)
    exe = Path(sys.executable).parent / "houseline"
    cmd = (
        [str(exe), "run", "-c", str(cfg_path)]
        if exe.exists()
        else [sys.executable, "-m", "bridge", "run", "-c", str(cfg_path)]
    )
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=rundir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    tail: list[str] = []
    try:
        deadline = t0 + 60
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError("child: no event=ready within 60 s; last lines:\n" + "\n".join(tail[-10:]))
            line = await asyncio.wait_for(proc.stdout.readline(), remaining)
            if not line:
                raise RuntimeError(
                    f"child exited ({await proc.wait()}) before ready:\n" + "\n".join(tail[-10:])
                )
            text = line.decode(errors="replace").rstrip()
            tail.append(text)
            if "event=ready" in text:
                ready = time.perf_counter() - t0
                break
        await asyncio.sleep(0.2)  # let it settle, then read RSS
        rss = rss_mb(proc.pid)
        if rss is None:
            raise RuntimeError("child: could not read VmRSS")
        return ready, rss
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.communicate(), 15)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


# --------------------------------------------------------------------------------------------


def sent(messages: int, concurrency: int) -> int:
    """How many messages a run of ``messages`` at ``concurrency`` sends (whole ones per sender)."""
    return max(1, messages // concurrency) * concurrency


async def profile_shares(
    commits: BridgeChild,
    breakdowns: dict[str, dict[str, Any]],
    what: str,
    run: Callable[[], Awaitable[float]],
    problems: list[str],
    seconds: float = 6.0,
) -> None:
    """py-spy samples the bridge while ``run`` is repeated for ``seconds``; shares by group."""
    assert commits.pid is not None
    try:
        before = thread_cpu(commits.pid)
        recording = asyncio.ensure_future(record(commits.pid, seconds))
        while not recording.done():
            await run()
        stacks = await recording
        got = classify(stacks, thread_cpu_delta(commits.pid, before, thread_cpu(commits.pid)))
    except Exception as e:  # noqa: BLE001 - report and keep the figures
        problems.append(f"CPU breakdown {what}: {type(e).__name__}: {e}")
        return
    breakdowns[what] = {"samples": got.samples, "shares": {k: round(v, 3) for k, v in got.shares.items()}}
    log(f"   {what}: {got.line()}")


async def stack_pass(
    workdir: Path,
    *,
    runs: int,
    suffix: str,
    problems: list[str],
    full: bool,
    breakdowns: dict[str, dict[str, Any]],
    decision_s: float,
    postgres: Any | None = None,
) -> list[Figure]:
    """One stack (Synapse, sandbox Telegram, bridge) and the throughput/latency set on it.

    ``full`` adds what does not depend on the database (limits) or is SQLite-only (the 10k
    portals child), so the PostgreSQL pass repeats only the set whose figures the database
    can change. ``postgres`` is a running bench.postgres cluster: the bridge's store and
    Synapse then both use it. Figure names get ``suffix`` (``_pg`` for that pass).
    """
    from bridge.devstack import start_dev_stack

    figures: list[Figure] = []
    urls: dict[str, str] = {}
    if postgres is not None:
        urls = {
            "bridge_database_url": postgres.url("bridge"),
            "homeserver_database_url": postgres.url("synapse"),
        }
    log(
        "starting Synapse, sandbox Telegram and the bridge (its own process)"
        + (" (both on PostgreSQL)" if postgres else "")
    )
    t = time.perf_counter()
    stack = await start_dev_stack(workdir / "stack", rate_limits=False, **urls)
    try:
        # Throughput, like inbound, with the sandbox's limits off: the bridge's own pacing to
        # Telegram's limits is off too (measured with both on, by the limits run).
        child = BridgeChild(stack.config_path, pacing=False, name="throughput")
        try:
            await child.start()
            log(f"stack ready in {time.perf_counter() - t:.1f}s")
            figures += await _measure(
                stack,
                child,
                runs=runs,
                suffix=suffix,
                problems=problems,
                breakdowns=breakdowns,
                decision_s=decision_s,
            )
        finally:
            await child.stop()
        if full:
            limited = BridgeChild(stack.config_path, pacing=True, name="limits")
            try:
                await limited.start(catchup=True)
                figures += await limits_run(stack, limited, runs, problems)
            finally:
                await limited.stop()
        if full:
            try:
                log("7/8 10,000 portals: startup time and RSS of `houseline run` (child process)")
                template = workdir / "tenk.db"
                built = await build_10k_db(template)
                log(f"   10k portal rows written in {built:.1f}s")
                ready, rss = [], []
                for r in range(runs):
                    t_ready, m = await child_ready_run(stack.config_path, workdir, template, r)
                    ready.append(t_ready)
                    rss.append(m)
                figures.append(Figure("memory_rss_mb_10k_portals", rss, "MB", "<= 150", lambda v: v <= 150))
                figures.append(Figure("time_to_ready_s_10k_portals", ready, "s", "<= 2", lambda v: v <= 2))
                # The same without LINE: its SDK's import is most of the start-up (unrated).
                bare = [
                    (await child_ready_run(stack.config_path, workdir, template, r, ("line",)))[0]
                    for r in range(runs)
                ]
                figures.append(
                    Figure(
                        "time_to_ready_s_10k_portals_without_line",
                        bare,
                        "s",
                        note="the same child with networks.line removed from its config",
                    )
                )
            except Exception as e:  # noqa: BLE001 - report and keep the other figures
                problems.append(f"10k portals: {type(e).__name__}: {e}")
    finally:
        await stack.stop()
    return figures


async def _measure(
    stack,
    commits: BridgeChild,
    *,
    runs: int,
    suffix: str,
    problems: list[str],
    breakdowns: dict[str, dict[str, Any]],
    decision_s: float,
) -> list[Figure]:
    figures: list[Figure] = []
    s = suffix
    config = stack.config
    sandbox = stack.telegram.url
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        mx = Matrix(http, config.homeserver.url, stack.registration.as_token, config.bot_mxid)
        maxc = max(CONCURRENCY)

        log(f"2/8 ceiling: creating {maxc} rooms with one ghost each")
        t = time.perf_counter()
        ceiling_rooms = await setup_ceiling_rooms(mx, config.homeserver.domain, maxc)
        log(f"   done in {time.perf_counter() - t:.1f}s")

        log(f"3/8 inbound: warming up {maxc} portals (one message per chat)")
        users = [7_000_000 + i for i in range(maxc)]
        t = time.perf_counter()
        base = commits.count("in")
        await gather_bounded([client_say(http, sandbox, u, f"Client{u}", "hello") for u in users], 20)
        await commits.wait_count("in", base + maxc, limit=240)
        log(f"   {maxc} portals in {time.perf_counter() - t:.1f}s")

        ceiling: dict[int, list[float]] = {c: [] for c in CONCURRENCY}
        inbound: dict[int, list[float]] = {c: [] for c in CONCURRENCY}
        cpu_in = CpuPairs()
        for c in CONCURRENCY:
            for r in range(runs):
                with cpu_in.homeserver(stack.homeserver.pid, sent(MESSAGES[c], c)):
                    ceiling[c].append((await ceiling_run(mx, ceiling_rooms, c, MESSAGES[c]))[0])
                with cpu_in.bridge(commits.pid, c, sent(MESSAGES[c], c)):
                    inbound[c].append(await inbound_run(http, sandbox, commits, users, c, MESSAGES[c]))
            log(
                f"   c={c}: ceiling {statistics.median(ceiling[c]):.1f}/s  inbound {statistics.median(inbound[c]):.1f}/s"
            )
        await commits.verify(problems, f"inbound{s}")
        for c in CONCURRENCY:
            figures.append(Figure(f"inbound_messages_per_s_c{c}{s}", inbound[c], "msgs/s"))
        for c in CONCURRENCY:
            ratios = [i / h for i, h in zip(inbound[c], ceiling[c])]
            figures.append(
                Figure(f"inbound_ratio_to_ceiling_c{c}{s}", ratios, "ratio", ">= 0.9", lambda v: v >= 0.9)
            )
        figures += cpu_in.figures("inbound", s)

        log("4/8 outbound: the employee joins the portals")
        portal_rooms = await commits.portal_rooms([str(u) for u in users])
        emp = stack.employee
        await gather_bounded(
            [mx.call("POST", f"/rooms/{quote(r)}/join", {}, token=emp.access_token) for r in portal_rooms], 10
        )
        await asyncio.sleep(1.0)  # let the bridge see the joins
        outbound: dict[int, list[float]] = {c: [] for c in CONCURRENCY}
        # Each outbound run is paired with a ceiling run right before it, as inbound's are: the
        # homeserver's own rate drifts by ±20 % over a minute on this kind of machine, and a ratio
        # against a ceiling measured minutes earlier carried that drift.
        ceiling_out: dict[int, list[float]] = {c: [] for c in CONCURRENCY}
        cpu_out = CpuPairs()
        for c in CONCURRENCY:
            if len(portal_rooms) < c:
                problems.append(f"outbound c={c}{s}: only {len(portal_rooms)} portals")
                continue
            for r in range(runs):
                with cpu_out.homeserver(stack.homeserver.pid, sent(OUT_MESSAGES[c], c)):
                    ceiling_out[c].append((await ceiling_run(mx, ceiling_rooms, c, OUT_MESSAGES[c]))[0])
                with cpu_out.bridge(commits.pid, c, sent(OUT_MESSAGES[c], c)):
                    outbound[c].append(
                        await outbound_run(mx, commits, portal_rooms, emp.access_token, c, OUT_MESSAGES[c])
                    )
            log(
                f"   c={c}: ceiling {statistics.median(ceiling_out[c]):.1f}/s  outbound {statistics.median(outbound[c]):.1f}/s"
            )
        await commits.verify(problems, f"outbound{s}")
        for c in CONCURRENCY:
            figures.append(
                Figure(
                    f"ceiling_events_per_s_c{c}{s}",
                    ceiling[c] + ceiling_out[c],
                    "events/s",
                    note=f"{MESSAGES[c]} ghost sends per run, {c} rooms; each paired with an inbound or outbound run",
                )
            )
        for c in CONCURRENCY:
            if outbound[c]:
                figures.append(
                    Figure(
                        f"outbound_messages_per_s_c{c}{s}",
                        outbound[c],
                        "msgs/s",
                        note=f"{OUT_MESSAGES[c]} msgs per run; sandbox limits and the bridge's pacing off (see limits_*)",
                    )
                )
        for c in CONCURRENCY:
            if outbound[c]:
                ratios = [o / h for o, h in zip(outbound[c], ceiling_out[c])]
                figures.append(
                    Figure(
                        f"outbound_ratio_to_ceiling_c{c}{s}", ratios, "ratio", ">= 0.9", lambda v: v >= 0.9
                    )
                )

        figures += cpu_out.figures("outbound", s)
        figures.append(cpu_out.policy_cost(s, decision_s))

        log("   where the bridge's CPU goes (py-spy samples, c=10, each direction)")
        await profile_shares(
            commits,
            breakdowns,
            f"inbound{s}",
            lambda: inbound_run(http, sandbox, commits, users, 10, MESSAGES[10]),
            problems,
        )
        await profile_shares(
            commits,
            breakdowns,
            f"outbound{s}",
            lambda: outbound_run(mx, commits, portal_rooms, emp.access_token, 10, OUT_MESSAGES[10]),
            problems,
        )

        log("5/8 latency added by the bridge (paced inbound, 10 chats)")
        p: dict[int, list[float]] = {50: [], 95: [], 99: []}
        hs_all: list[float] = []
        for r in range(runs):
            end_to_end, hs = await latency_run(http, sandbox, commits, users[:10], mx, ceiling_rooms[:10])
            hs_ms = statistics.median(hs)
            hs_all.append(hs_ms)
            for q in p:
                p[q].append(percentile(end_to_end, q) - hs_ms)
        for q in p:
            figures.append(
                Figure(
                    f"latency_p{q}_ms{s}",
                    p[q],
                    "ms",
                    "<= 50" if q == 99 else None,
                    (lambda v: v <= 50) if q == 99 else None,
                    note=f"client POST -> committed, minus the median of ghost sends interleaved with it ({statistics.median(hs_all):.1f} ms)",
                )
            )

        await commits.verify(problems, f"end of pass{s}")
    return figures


async def limits_run(stack, commits: BridgeChild, runs: int, problems: list[str]) -> list[Figure]:
    log("6/8 sandbox rate limits on, the bridge's pacing on: outbound to one chat")
    emp = stack.employee
    config = stack.config
    portal_rooms = await commits.portal_rooms([str(7_000_000 + i) for i in range(max(CONCURRENCY))])
    stack.telegram.rate_limits = True
    connector = aiohttp.TCPConnector(limit=10)
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        ) as http:
            mx = Matrix(http, config.homeserver.url, stack.registration.as_token, config.bot_mxid)
            return await _limits(commits, mx, emp, portal_rooms, runs, problems)
    finally:
        stack.telegram.rate_limits = False


async def _limits(
    commits: BridgeChild, mx: Matrix, emp: Any, portal_rooms: list[str], runs: int, problems: list[str]
) -> list[Figure]:
    share, lost = [], []
    n_msgs = 13  # 3 burst + 10 at 1/s: an ideal sender needs 10 s
    for r in range(runs):
        room = portal_rooms[20 + r]
        base = commits.count("out")
        t0 = time.perf_counter()
        for k in range(n_msgs):
            await mx.send(room, f"limited {r}.{k}", token=emp.access_token)
        try:
            t1 = await commits.wait_count("out", base + n_msgs, limit=40)
            share.append(((n_msgs - 3) / 1.0) / (t1 - t0))
            lost.append(0)
        except TimeoutError:
            got = commits.count("out") - base
            lost.append(n_msgs - got)
            share.append(max(0, got - 3) / (time.perf_counter() - t0))
    await commits.verify(problems, "limits")
    return [
        Figure(
            "limits_share_of_allowed_rate",
            share,
            "ratio",
            ">= 0.95",
            lambda v: v >= 0.95,
            note=f"{n_msgs} msgs to one chat, per-chat bucket 3 burst + 1/s; lost per run {lost}",
        ),
        Figure("limits_lost_messages", [float(x) for x in lost], "msgs", "== 0", lambda v: v == 0),
    ]


async def postgres_pass(
    tmp: Path,
    problems: list[str],
    env: dict[str, Any],
    breakdowns: dict[str, dict[str, Any]],
    decision_s: float,
) -> list[Figure]:
    """The throughput/latency set again with the bridge's store and Synapse on PostgreSQL.

    Skipped, with one line saying how to install what is missing, where PostgreSQL or the
    Python drivers (the ``postgres`` extra) are not there; BENCH_PG=0 skips it on purpose.
    """
    from bench.postgres import INSTALL_HINT, find_binaries, start_postgres

    if os.environ.get("BENCH_PG", "1") == "0":
        print("PostgreSQL part skipped: BENCH_PG=0")
        return []
    if find_binaries() is None:
        print(f"PostgreSQL part skipped: PostgreSQL is not installed; install it with: {INSTALL_HINT}")
        return []
    missing = [m for m in ("asyncpg", "psycopg2") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"PostgreSQL part skipped: {', '.join(missing)} missing; install them with: pip install -e '.[postgres]'"
        )
        return []
    log(f"8/8 PostgreSQL: a throwaway cluster; the set again with {PG_RUNS} runs per figure")
    cluster = await start_postgres({"bridge": False, "synapse": True})
    try:
        env["postgres_version"] = cluster.version
        return await stack_pass(
            tmp / "pg",
            runs=PG_RUNS,
            suffix="_pg",
            problems=problems,
            full=False,
            breakdowns=breakdowns,
            decision_s=decision_s,
            postgres=cluster,
        )
    except Exception as e:  # noqa: BLE001 - report and keep the SQLite figures
        problems.append(f"PostgreSQL pass: {type(e).__name__}: {e}")
        return []
    finally:
        await cluster.stop()


ORDER = [
    "policy",
    "ceiling",
    "inbound_messages",
    "inbound_ratio",
    "outbound_messages",
    "outbound_ratio",
    "latency",
    "memory",
    "time_to_ready",
    "limits",
]


def _sorted(figures: list[Figure]) -> list[Figure]:
    return sorted(figures, key=lambda f: next((i for i, p in enumerate(ORDER) if f.name.startswith(p)), 99))


async def main() -> int:
    # The bridge (and so mautrix, which installs its logger class) is imported before logging is
    # set up: the store's "houseline.db" logger must be created as mautrix's TraceLogger.
    import bridge.bridge  # noqa: F401
    import bridge.devstack  # noqa: F401
    from bridge.logs import setup_logging

    t_all = time.perf_counter()
    figures: list[Figure] = []
    problems: list[str] = []
    env_extra: dict[str, Any] = {}

    log("1/8 policy decisions")
    policy = bench_policy()
    figures.append(policy)
    figures.extend(bench_supervision())
    decision_s = 1 / (policy.value or 1)
    breakdowns: dict[str, dict[str, Any]] = {}

    setup_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="houseline-bench-") as tmp_s:
        tmp = Path(tmp_s)
        figures += await stack_pass(
            tmp / "sqlite",
            runs=RUNS,
            suffix="",
            problems=problems,
            full=True,
            breakdowns=breakdowns,
            decision_s=decision_s,
        )
        pg_figures = await postgres_pass(tmp, problems, env_extra, breakdowns, decision_s)

    print()
    print("SQLite (bridge store and Synapse)")
    print(table(_sorted(figures)))
    if pg_figures:
        print()
        print(
            f"PostgreSQL {env_extra.get('postgres_version', '')} (bridge store and Synapse; {PG_RUNS} runs per figure)"
        )
        print(table(_sorted(pg_figures)))
    if breakdowns:
        print()
        print("Where the bridge's CPU goes (py-spy samples of the bridge process, c=10)")
        for what, b in breakdowns.items():
            shares = ", ".join(f"{k} {v:.0%}" for k, v in b["shares"].items())
            print(f"  {what}: {shares} ({b['samples']} samples)")
    for p_ in problems:
        print(f"problem: {p_}")
    total = time.perf_counter() - t_all
    print(f"\nwhole run: {total:.0f}s; results in {RESULTS}")
    env = environment(REPO)
    env.update(env_extra)
    env.update(
        {
            "runs_per_figure": RUNS,
            "runs_per_figure_pg": PG_RUNS if pg_figures else None,
            "messages_per_run": MESSAGES,
            "concurrency": list(CONCURRENCY),
            "databases": ["sqlite"] + (["postgresql"] if pg_figures else []),
            "total_seconds": round(total, 1),
            "problems": problems,
        }
    )
    all_figures = _sorted(figures) + _sorted(pg_figures)
    # make bench-scale's figures (bench/scale.py) stay: each command replaces only its own.
    earlier = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    scale = [f for f in earlier.get("figures", []) if f["name"].startswith(("scale_", "soak_"))]
    data = {
        "figures": [f.as_json() for f in all_figures] + scale,
        "cpu_breakdown": breakdowns,
        "environment": env,
    }
    if "scale" in earlier:
        data["scale"] = earlier["scale"]
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
