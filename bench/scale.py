"""`make bench-scale`: how the bridge's cost grows with the portals it keeps, and a soak.

For 1,000 / 10,000 / 100,000 portals in the store (SQLite, then PostgreSQL where installed):
the RSS and time to ready of `houseline run` (a child process, as deployed), and the catch-up
after a one-minute homeserver outage: how long the outbox waits (the part that grows with the
conversations under way) and how long the background sweep of the quiet portals takes (the part
that grows with every portal, and holds nothing up). Then a soak: 200 chats at half the
homeserver's ceiling rate, both directions, for 20 minutes.

How the rooms are made: the active conversations are real (sandbox clients write, the bridge
opens their portals, the employee answers); the quiet portals are rows written straight into the
store, the first BENCH_SCALE_REAL_ROOMS of them (1,000) with a real room the bot created on the
homeserver and the rest with room ids the homeserver does not know (it answers those in about a
millisecond: they cost the sweep less than real ones would). Synapse on SQLite creates about 20
rooms a second here, so 100,000 real rooms would take over an hour.

Figures go to bench/results.json next to `make bench`'s (each command replaces only its own) and
the curves to docs/bench-scale.png. Env knobs: BENCH_SCALE_SIZES (1000,10000,100000),
BENCH_SCALE_REAL_ROOMS (1000), BENCH_SCALE_ACTIVE (20,100), BENCH_OUTAGE_S (60), BENCH_SOAK_S
(1200), BENCH_PG (1). When employees' messages do not go out, BENCH_KEEP_HS_LOG=<file> keeps a
copy of the homeserver's log, and HOUSELINE_HS_DEBUG_LOGGERS=synapse.appservice,... runs those
Synapse loggers at DEBUG (sandbox/homeserver.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bench.child import BridgeChild
from bench.measure import Figure, environment, rss_mb, table
from bench.run import REPO, RESULTS, Matrix, ceiling_run, client_say, gather_bounded, log, setup_ceiling_rooms

SIZES = [int(x) for x in os.environ.get("BENCH_SCALE_SIZES", "1000,10000,100000").split(",") if x]
REAL_ROOMS = int(os.environ.get("BENCH_SCALE_REAL_ROOMS", "1000"))
OUTAGE_S = float(os.environ.get("BENCH_OUTAGE_S", "60"))
SOAK_S = float(os.environ.get("BENCH_SOAK_S", "1200"))
#: Conversations under way when the homeserver goes away: the usual case, and (at 10k) five
#: times more.
ACTIVE = tuple(int(x) for x in os.environ.get("BENCH_SCALE_ACTIVE", "20,100").split(",") if x)
SOAK_CHATS = 200
CHART = REPO / "docs" / "bench-scale.png"
#: Client user ids of the active conversations (the sandbox makes a private chat per user).
ACTIVE_USERS = [6_000_000 + i for i in range(max(ACTIVE))]


async def make_quiet_rooms(mx: Matrix, count: int) -> list[str]:
    """Rooms the bot creates and is in, standing for quiet portals."""

    async def one(i: int) -> str:
        body = {"preset": "private_chat", "name": f"quiet {i}", "is_direct": False}
        return (await mx.call("POST", "/createRoom", body, user=mx.bot))["room_id"]

    return await gather_bounded([one(i) for i in range(count)], 10)


async def add_quiet_portals(database_url: str, start: int, stop: int, real_rooms: list[str]) -> None:
    """Portal rows ``start``..``stop`` (quiet: nothing seen in them), in one transaction."""
    from mautrix.util.async_db import Database

    db = Database.create(database_url)
    await db.start()
    try:
        now = int(time.time() * 1000) - 30 * 86400_000
        rows = [
            (
                "telegram",
                "bench",
                str(20_000_000 + i),
                real_rooms[i] if i < len(real_rooms) else f"!quiet{i:06d}:localhost",
                f"Quiet client {i}",
                now,
            )
            for i in range(start, stop)
        ]
        async with db.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO portal (network, account, chat_id, room_id, name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                rows,
            )
    finally:
        await db.stop()


async def backdate_active(database_url: str, rooms: list[str], seconds: float) -> None:
    """Everything the store knows of ``rooms`` (the portal, its messages, the events seen)
    happened ``seconds`` earlier: a finished conversation, as far as the catch-up can tell."""
    from mautrix.util.async_db import Database

    db = Database.create(database_url)
    await db.start()
    try:
        async with db.acquire() as conn, conn.transaction():
            for room in rooms:
                for sql in (
                    "UPDATE seen_event SET seen_at = seen_at - $1 WHERE room_id = $2",
                    "UPDATE message SET created_at = created_at - $1 WHERE room_id = $2",
                    "UPDATE portal SET created_at = created_at - $1 WHERE room_id = $2",
                ):
                    await conn.execute(sql, int(seconds * 1000), room)
    finally:
        await db.stop()


async def seen_in(database_url: str, rooms: list[str], limit: float) -> None:
    """Until the bridge has seen an event in each of ``rooms`` (the homeserver's backlog done)."""
    from mautrix.util.async_db import Database

    db = Database.create(database_url)
    await db.start()
    try:
        wanted = set(rooms)
        deadline = time.monotonic() + limit
        while True:
            rows = await db.fetch("SELECT DISTINCT room_id FROM seen_event")
            missing = wanted - {r["room_id"] for r in rows}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge saw no event in {len(missing)} of the quiet rooms")
            await asyncio.sleep(1.0)
    finally:
        await db.stop()


async def open_active(http, stack, mx: Matrix, child: BridgeChild) -> list[str]:
    """The active conversations: each client writes, the employee joins and answers."""
    sandbox = stack.telegram.url
    base = child.count("in")
    await gather_bounded([client_say(http, sandbox, u, f"Active{u}", "hello") for u in ACTIVE_USERS], 20)
    await child.wait_count("in", base + len(ACTIVE_USERS), 240)
    rooms = await child.portal_rooms([str(u) for u in ACTIVE_USERS])
    token = stack.employee.access_token
    await gather_bounded([mx.call("POST", f"/rooms/{quote(r)}/join", {}, token=token) for r in rooms], 10)
    return rooms


async def employees_write(mx: Matrix, child: BridgeChild, rooms: list[str], token: str, text: str) -> None:
    base = child.count("out")
    await gather_bounded([mx.send(r, text, token=token) for r in rooms], 20)
    try:
        await child.wait_count("out", base + len(rooms), 120)
    except TimeoutError:
        print("the bridge's last lines:\n" + "\n".join(child.tail[-40:]), flush=True)
        print(await held_up(child.database_url, rooms, text), flush=True)
        if child.pid is not None:
            os.kill(child.pid, signal.SIGUSR1)  # where each of its tasks waits (bridge.cli)
            await asyncio.sleep(2.0)
            print("the bridge's tasks:\n" + "\n".join(child.task_lines), flush=True)
        hs_log = child.config_path.parent / "synapse" / "homeserver.log"
        if hs_log.exists():
            lines = [line for line in hs_log.read_text(errors="replace").splitlines() if "appservice" in line]
            print("the homeserver's appservice lines:\n" + "\n".join(lines[-40:]), flush=True)
            if keep := os.environ.get("BENCH_KEEP_HS_LOG"):
                Path(keep).write_bytes(hs_log.read_bytes())
        raise


async def held_up(database_url: str, rooms: list[str], text: str) -> str:
    """Where the messages that did not arrive are, as far as the store says."""
    from mautrix.util.async_db import Database

    db = Database.create(database_url)
    await db.start()
    try:
        queued = await db.fetch("SELECT room_id, attempts, event FROM outbox")
        mine = [r for r in queued if text in r["event"]]
        sending = await db.fetch("SELECT event_id, room_id FROM outbound_in_flight")
        held = await db.fetchval("SELECT COUNT(*) FROM held_for_senior")
        waiting_rooms = {r["room_id"] for r in mine}
        index = sorted(rooms.index(r) for r in waiting_rooms if r in rooms)
        return (
            f"store: {len(queued)} queued ({len(mine)} of these writes, attempts"
            f" {sorted({r['attempts'] for r in mine})}, rooms at positions {index[:30]}),"
            f" {len(sending)} marked sending, {held} held"
        )
    finally:
        await db.stop()


async def outage(stack, child: BridgeChild) -> tuple[dict[str, str], dict[str, str]]:
    """Stop the homeserver for OUTAGE_S and start it again: the catch-up's line and the sweep's."""
    mark = len(child.notes)
    await stack.homeserver.stop()
    await asyncio.sleep(OUTAGE_S)
    await stack.homeserver.start()
    done = await child.wait_note("catchup_done", mark, 300)
    sweep = await child.wait_note("catchup_sweep_done", mark, 1200) if int(done.get("quiet", "0")) else {}
    return done, sweep


async def scale_pass(
    tmp: Path, suffix: str, problems: list[str], postgres: Any | None = None
) -> tuple[list[Figure], list[dict[str, Any]]]:
    from bridge.devstack import start_dev_stack

    urls: dict[str, str] = {}
    if postgres is not None:
        urls = {
            "bridge_database_url": postgres.url("bridge"),
            "homeserver_database_url": postgres.url("synapse"),
        }
    stack = await start_dev_stack(tmp / f"scale{suffix}", rate_limits=False, **urls)
    rows: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            config = stack.config
            mx = Matrix(http, config.homeserver.url, stack.registration.as_token, config.bot_mxid)
            child = BridgeChild(stack.config_path, pacing=False, name=f"scale{suffix}")
            await child.start()
            try:
                # With the bridge running, so the homeserver hands it the rooms' events now
                # rather than in a recovery later, in the middle of a measurement.
                log(f"scale{suffix}: {REAL_ROOMS} real rooms for quiet portals")
                t = time.perf_counter()
                real = await make_quiet_rooms(mx, min(REAL_ROOMS, max(SIZES)))
                log(f"   {len(real)} rooms in {time.perf_counter() - t:.0f}s")
                active = await open_active(http, stack, mx, child)
                await employees_write(mx, child, active, stack.employee.access_token, "on it")
                await seen_in(child.database_url, real, 180)
            finally:
                await child.stop()
            # The bridge saw the bot's own events in the rooms just made, so as far as the
            # catch-up can tell they were busy; quiet portals last saw anything weeks ago.
            await backdate_active(child.database_url, real, 30 * 86400)
            have = len(active)
            for size in SIZES:
                await add_quiet_portals(child.database_url, have, max(have, size), real)
                have = max(have, size)
                # A new child each time: one BridgeChild watches one process.
                child = BridgeChild(stack.config_path, pacing=False, name=f"scale{suffix}")
                rows += await measure_size(stack, mx, child, active, size, suffix, problems)
    finally:
        await stack.stop()
    return figures_of(rows, suffix), rows


async def measure_size(
    stack, mx: Matrix, child: BridgeChild, active: list[str], size: int, suffix: str, problems: list[str]
) -> list[dict[str, Any]]:
    """Ready time and RSS with ``size`` portals, then an outage with each number of active
    conversations (both at 10k, the usual one elsewhere)."""
    log(f"scale{suffix}: {size:,} portals")
    ready = await child.start()
    await asyncio.sleep(2.0)
    assert child.pid is not None
    rows: list[dict[str, Any]] = [{"portals": size, "ready_s": ready, "rss_mb": rss_mb(child.pid)}]
    log(f"   ready {ready:.2f}s, RSS {rows[0]['rss_mb']:.1f} MB")
    token = stack.employee.access_token
    try:
        with contextlib.suppress(TimeoutError):
            await child.wait_note("catchup_done", 0, 60)  # the start's, over the recent rooms
        for n_active in ACTIVE if size == 10_000 else ACTIVE[:1]:
            quiet_now = active[n_active:]
            await backdate_active(child.database_url, quiet_now, 7200)
            await employees_write(mx, child, active[:n_active], token, f"before the outage ({size})")
            done, sweep = await outage(stack, child)
            row = {
                "portals": size,
                "active": n_active,
                "pause_s": int(done["ms"]) / 1000,
                "rooms_read": int(done["rooms_read"]) if done["rooms_read"].isdigit() else None,
                "quiet": int(done.get("quiet", 0)),
                "sweep_s": int(sweep["ms"]) / 1000 if sweep else 0.0,
                "rss_after_mb": rss_mb(child.pid),
            }
            rows.append(row)
            # What the employees write right after the outage goes out: nothing is held up.
            await employees_write(mx, child, active[:n_active], token, f"after the outage ({size})")
            log(
                f"   active={n_active}: the outbox waited {row['pause_s']:.2f}s for {row['rooms_read']} rooms;"
                f" the sweep of {row['quiet']:,} quiet portals took {row['sweep_s']:.1f}s"
            )
            await backdate_active(child.database_url, quiet_now, -7200)
        await child.verify(problems, f"scale {size}{suffix}")
    finally:
        await child.stop()
    return rows


def figures_of(rows: list[dict[str, Any]], suffix: str) -> list[Figure]:
    figures = []
    for r in rows:
        n = r["portals"]
        k = f"{n // 1000}k" if n % 1000 == 0 else str(n)
        if "ready_s" in r:
            target = n == 100_000
            figures.append(
                Figure(
                    f"scale_rss_mb_{k}{suffix}",
                    [r["rss_mb"]],
                    "MB",
                    *(("<= 150", lambda v: v <= 150) if target else ()),
                )
            )
            figures.append(
                Figure(
                    f"scale_ready_s_{k}{suffix}",
                    [r["ready_s"]],
                    "s",
                    *(("<= 2", lambda v: v <= 2) if target else ()),
                )
            )
        if "pause_s" in r:
            a = r["active"]
            rated = n == 10_000 and a == ACTIVE[0]
            figures.append(
                Figure(
                    f"scale_catchup_pause_s_{k}_active{a}{suffix}",
                    [r["pause_s"]],
                    "s",
                    *(("<= 10", lambda v: v <= 10) if rated else ()),
                    note=f"{OUTAGE_S:.0f} s outage; the outbox waited for {r['rooms_read']} rooms",
                )
            )
            figures.append(
                Figure(
                    f"scale_catchup_sweep_s_{k}_active{a}{suffix}",
                    [r["sweep_s"]],
                    "s",
                    note=f"{r['quiet']:,} quiet portals read in the background, nothing held up",
                )
            )
    return figures


# --------------------------------------------------------------------------------------------
# soak


async def soak(tmp: Path, problems: list[str]) -> list[Figure]:
    from bridge.devstack import start_dev_stack

    stack = await start_dev_stack(tmp / "soak", rate_limits=False)
    child = BridgeChild(stack.config_path, pacing=False, name="soak")
    try:
        await child.start()
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=400), timeout=aiohttp.ClientTimeout(total=60)
        ) as http:
            config = stack.config
            mx = Matrix(http, config.homeserver.url, stack.registration.as_token, config.bot_mxid)
            rooms = await setup_ceiling_rooms(mx, config.homeserver.domain, 100)
            ceiling = statistics.median([(await ceiling_run(mx, rooms, 100, 500))[0] for _ in range(3)])
            rate = ceiling / 2
            users = [5_000_000 + i for i in range(SOAK_CHATS)]
            base_in = child.count("in")
            await gather_bounded(
                [client_say(http, stack.telegram.url, u, f"Soak{u}", "hello") for u in users], 20
            )
            await child.wait_count("in", base_in + SOAK_CHATS, 240)
            portals = await child.portal_rooms([str(u) for u in users])
            token = stack.employee.access_token
            await gather_bounded(
                [mx.call("POST", f"/rooms/{quote(r)}/join", {}, token=token) for r in portals], 10
            )
            log(
                f"soak: {SOAK_S / 60:.0f} min at {rate:.0f} msgs/s (half the ceiling of {ceiling:.0f}/s), {SOAK_CHATS} chats"
            )
            samples, sent = await _soak_traffic(http, stack, mx, child, users, portals, token, rate)
        start_in, start_out = sent["base_in"], sent["base_out"]
        await child.wait_count("in", start_in + sent["in"], 300)
        await child.wait_count("out", start_out + sent["out"], 300)
        lost = (start_in + sent["in"] - child.count("in")) + (start_out + sent["out"] - child.count("out"))
        await child.verify(problems, "soak")
    finally:
        await child.stop()
        await stack.stop()
    warm = samples[len(samples) // 10]  # after the first tenth: caches and pools filled
    growth = (samples[-1] - warm) / warm
    return [
        Figure(
            "soak_rss_growth",
            [growth],
            "ratio",
            "<= 0.05",
            lambda v: v <= 0.05,
            note=f"RSS {warm:.1f} -> {samples[-1]:.1f} MB over {SOAK_S / 60:.0f} min ({sent['in']} in, {sent['out']} out)",
        ),
        Figure("soak_lost_messages", [float(max(0, lost))], "msgs", "== 0", lambda v: v == 0),
        Figure(
            "soak_errors_logged",
            [float(sum("soak: the bridge logged an error" in p for p in problems))],
            "lines",
            "== 0",
            lambda v: v == 0,
        ),
    ]


async def _soak_traffic(
    http, stack, mx, child, users, portals, token, rate
) -> tuple[list[float], dict[str, int]]:
    """Half the rate each way, spread over the chats; RSS sampled every 10 s."""
    sent = {"in": 0, "out": 0, "base_in": child.count("in"), "base_out": child.count("out")}
    samples: list[float] = []
    interval = 2.0 / rate  # one message each way per interval
    t0 = time.perf_counter()
    next_sample = t0
    k = 0
    pending: set[asyncio.Task] = set()
    while time.perf_counter() - t0 < SOAK_S:
        i = k % len(users)
        pending.add(
            asyncio.ensure_future(
                client_say(http, stack.telegram.url, users[i], f"Soak{users[i]}", f"soak in {k}")
            )
        )
        pending.add(asyncio.ensure_future(mx.send(portals[i % len(portals)], f"soak out {k}", token=token)))
        sent["in"] += 1
        sent["out"] += 1
        k += 1
        done = {t for t in pending if t.done()}
        for t in done:
            t.result()
        pending -= done
        if time.perf_counter() >= next_sample:
            samples.append(rss_mb(child.pid) or 0.0)
            next_sample += 10
        await asyncio.sleep(max(0.0, t0 + k * interval - time.perf_counter()))
    await asyncio.gather(*pending)
    samples.append(rss_mb(child.pid) or 0.0)
    return samples, sent


# --------------------------------------------------------------------------------------------


def chart(rows_by_db: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for db, rows in rows_by_db.items():
        sized = [r for r in rows if "ready_s" in r]
        xs = [r["portals"] for r in sized]
        axes[0].plot(xs, [r["rss_mb"] for r in sized], marker="o", label=db)
        axes[1].plot(xs, [r["ready_s"] for r in sized], marker="o", label=db)
        paused = [r for r in rows if r.get("active") == ACTIVE[0]]
        axes[2].plot(
            [r["portals"] for r in paused],
            [r["pause_s"] for r in paused],
            marker="o",
            label=f"{db}: outbox waits",
        )
        axes[2].plot(
            [r["portals"] for r in paused],
            [r["sweep_s"] for r in paused],
            marker="x",
            linestyle="--",
            label=f"{db}: background sweep",
        )
    for ax, title, limit in zip(
        axes, ("RSS (MB)", "time to ready (s)", f"catch-up after a {OUTAGE_S:.0f} s outage (s)"), (150, 2, 10)
    ):
        ax.set_xscale("log")
        ax.set_xlabel("portals")
        ax.set_title(title)
        ax.axhline(limit, color="grey", linewidth=0.8, linestyle=":")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)


def merge_results(figures: list[Figure], env: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
    """bench/results.json keeps make bench's figures; the scale ones are replaced."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"figures": []}
    kept = [f for f in data.get("figures", []) if not f["name"].startswith(("scale_", "soak_"))]
    data["figures"] = kept + [f.as_json() for f in figures]
    data["scale"] = {"curves": rows, "environment": env}
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


async def main() -> int:
    import bridge.bridge  # noqa: F401 - see bench.run.main: mautrix's logger class first
    from bridge.logs import setup_logging
    from bench.postgres import find_binaries, start_postgres

    setup_logging("WARNING")
    t_all = time.perf_counter()
    problems: list[str] = []
    figures: list[Figure] = []
    rows: dict[str, list[dict[str, Any]]] = {}
    env = environment(REPO)
    with tempfile.TemporaryDirectory(prefix="houseline-bench-scale-") as tmp_s:
        tmp = Path(tmp_s)
        sqlite, rows["sqlite"] = await scale_pass(tmp, "", problems)
        figures += sqlite
        if os.environ.get("BENCH_PG", "1") != "0" and find_binaries() is not None:
            cluster = await start_postgres({"bridge": False, "synapse": True})
            try:
                env["postgres_version"] = cluster.version
                pg, rows["postgresql"] = await scale_pass(tmp, "_pg", problems, postgres=cluster)
                figures += pg
            except Exception as e:  # noqa: BLE001 - report and keep the SQLite figures
                problems.append(f"PostgreSQL scale pass: {type(e).__name__}: {e}")
            finally:
                await cluster.stop()
        if SOAK_S > 0:
            figures += await soak(tmp, problems)
    print()
    print(table(figures))
    for p in problems:
        print(f"problem: {p}")
    env.update(
        {
            "outage_s": OUTAGE_S,
            "soak_s": SOAK_S,
            "real_rooms": REAL_ROOMS,
            "problems": problems,
            "total_seconds": round(time.perf_counter() - t_all, 1),
        }
    )
    merge_results(figures, env, rows)
    chart(rows)
    print(f"\nwhole run: {time.perf_counter() - t_all:.0f}s; results in {RESULTS}, curves in {CHART}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
