"""The bridge under test as its own process (``houseline run``), as it is deployed, observed
through its log.

Run inside the bench's process, the bridge shared one event loop with the clients and the
sandbox that load it: an employee's next send waited behind the bridge's handling of the last
one, so the homeserver idled (0.82 of a core instead of 0.94 in the ceiling run) and the bench
measured its own loop as much as the bridge. A child process has its own loop, as in
production. The bench learns what the child committed from the one log line the bridge writes
per message once its mapping is committed (``event=inbound_bridged``,
``event=outbound_delivered``, ``event=disclaimer_sent``), timestamped when read, and checks
the counts against the database once per phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import yaml

_PAIR = re.compile(r"(\w+)=(\S+)")
_WATCHED = (b"event=inbound_bridged", b"event=outbound_delivered", b"event=disclaimer_sent")
_NOTED = ("catchup_done", "catchup_sweep_done", "homeserver_back", "homeserver_down")


class BridgeChild:
    """One ``houseline run`` with the stack's config (``pacing`` decides whether the bridge keeps
    to Telegram's send limits), and what it committed, by direction."""

    def __init__(self, config_src: Path, *, pacing: bool, name: str) -> None:
        cfg = yaml.safe_load(config_src.read_text())
        cfg.setdefault("networks", {}).setdefault("telegram", {})["pacing"] = pacing
        cfg["logging"] = {"level": "INFO", "format": "keyvalue"}
        # Next to the original, so its relative paths (registration, database) mean the same.
        self.config_path = config_src.parent / f"config.{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.config_path.chmod(0o600)
        self.database_url: str = cfg["database"]["url"]
        if self.database_url.startswith("sqlite:") and not Path(self.database_url[7:]).is_absolute():
            self.database_url = f"sqlite:{config_src.parent / self.database_url[7:]}"
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.tail: list[str] = []
        self.task_lines: list[str] = []
        self.errors: list[str] = []
        #: Warnings by event name (retries, a homeserver thought down): what explains an outlier.
        self.warnings: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._catchup_done = asyncio.Event()
        self._exited = asyncio.Event()
        #: direction -> (chat_id, remote_id) -> when its line was read (perf_counter)
        self.rows: dict[str, dict[tuple[str, str], float]] = {"in": {}, "out": {}}
        self.times: dict[str, list[float]] = {"in": [], "out": []}
        self.base = {"in": 0, "out": 0}
        self._changed = asyncio.Event()
        #: Lines of the catch-up and the homeserver watch, as key=value pairs, in order.
        self.notes: list[dict[str, str]] = []

    async def start(self, *, timeout: float = 90.0, catchup: bool = False) -> float:
        """Seconds to ``event=ready`` (and, with ``catchup``, to the start-up catch-up done: a
        bridge restarted over a store with recent rooms reads them back first)."""
        self.base = await self.db_counts()
        exe = Path(sys.executable).parent / "houseline"
        cmd = (
            [str(exe), "run", "-c", str(self.config_path)]
            if exe.exists()
            else [sys.executable, "-m", "bridge", "run", "-c", str(self.config_path)]
        )
        t0 = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=self.config_path.parent,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        self._reader = asyncio.create_task(self._read(), name="bridge-child-log")
        waits = [self._ready.wait()] + ([self._catchup_done.wait()] if catchup else [])
        done = asyncio.ensure_future(asyncio.gather(*waits))
        exited = asyncio.ensure_future(self._exited.wait())
        try:
            await asyncio.wait({done, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if not done.done():
            done.cancel()
            what = "exited" if self._exited.is_set() else f"not ready within {timeout:.0f}s"
            await self.stop()
            raise RuntimeError(f"bridge child {what}; last lines:\n" + "\n".join(self.tail[-15:]))
        return time.perf_counter() - t0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                self._exited.set()
                return
            now = time.perf_counter()
            if any(w in line for w in _WATCHED):
                self._note(dict(_PAIR.findall(line.decode(errors="replace"))), now)
                continue
            text = line.decode(errors="replace").rstrip()
            if "logger=houseline.tasks" in text:
                self.task_lines.append(text)  # a SIGUSR1 dump (bridge.cli), kept whole
                continue
            self.tail = self.tail[-50:] + [text]
            if "level=error" in text or "level=critical" in text:
                self.errors.append(text)
            elif "level=warning" in text:
                name = dict(_PAIR.findall(text)).get("event", "other")
                self.warnings[name] = self.warnings.get(name, 0) + 1
            if "event=ready" in text:
                self._ready.set()
            elif "event=catchup_done" in text:
                self._catchup_done.set()
            if any(f"event={e}" in text for e in _NOTED):
                self.notes.append(dict(_PAIR.findall(text)))
                self._changed.set()

    def _note(self, pairs: dict[str, str], now: float) -> None:
        event = pairs.get("event")
        if event == "inbound_bridged":
            keys = [("in", pairs.get("chat", ""), pairs.get("message_id", ""))]
        else:
            keys = [
                ("out", pairs.get("chat", ""), rid) for rid in pairs.get("remote_ids", "").split(",") if rid
            ]
        for direction, chat, remote in keys:
            seen = self.rows[direction]
            if (chat, remote) not in seen:
                seen[(chat, remote)] = now
                self.times[direction].append(now)
                self._changed.set()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._reader.cancel()

    # what was committed

    def count(self, direction: str) -> int:
        return self.base[direction] + len(self.times[direction])

    async def wait_count(self, direction: str, target: int, limit: float) -> float:
        """perf_counter when the ``target``-th message of ``direction`` was committed."""
        await self._until(
            lambda: self.count(direction) >= target or None,
            limit,
            lambda: f"{direction}: {self.count(direction)} of {target} after {limit}s",
        )
        index = target - self.base[direction] - 1
        return self.times[direction][index] if index >= 0 else time.perf_counter()

    async def wait_row(self, direction: str, chat_id: str, remote_id: str, limit: float) -> float:
        """perf_counter when that message was committed."""
        return await self._until(
            lambda: self.rows[direction].get((chat_id, remote_id)),
            limit,
            lambda: f"{direction} message {chat_id}/{remote_id} not committed after {limit}s",
        )

    async def _until(self, found: Callable[[], Any], limit: float, failure: Callable[[], str]) -> Any:
        """``found()`` once it is not None, woken by each committed message; TimeoutError (with
        the bridge's last lines if it exited) after ``limit`` seconds."""
        deadline = time.perf_counter() + limit
        while (value := found()) is None:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._exited.is_set():
                raise TimeoutError(failure() + self._exit_note())
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass
        return value

    async def wait_note(self, event: str, after: int, limit: float) -> dict[str, str]:
        """The first noted line of ``event`` from ``notes[after:]`` on."""
        return await self._until(
            lambda: next((n for n in self.notes[after:] if n.get("event") == event), None),
            limit,
            lambda: f"no event={event} after {limit}s",
        )

    def _exit_note(self) -> str:
        return "; the bridge exited:\n" + "\n".join(self.tail[-10:]) if self._exited.is_set() else ""

    async def db_counts(self) -> dict[str, int]:
        """Rows of the message map by direction, read from the database itself."""
        async with self._database() as db:
            try:
                return {
                    d: int(await db.fetchval("SELECT COUNT(*) FROM message WHERE direction=$1", d) or 0)
                    for d in ("in", "out")
                }
            except Exception as e:  # noqa: BLE001 - a store not created yet has no rows
                if "no such table" in str(e) or "does not exist" in str(e):
                    return {"in": 0, "out": 0}
                raise

    async def portal_rooms(self, chat_ids: list[str]) -> list[str]:
        """The portal rooms of these chats, in the order given (those that exist)."""
        async with self._database() as db:
            rows = {r["chat_id"]: r["room_id"] for r in await db.fetch("SELECT chat_id, room_id FROM portal")}
        return [rows[c] for c in chat_ids if c in rows]

    @contextlib.asynccontextmanager
    async def _database(self) -> AsyncIterator[Any]:
        """The bridge's database, opened beside the running bridge for one question."""
        from mautrix.util.async_db import Database

        db = Database.create(self.database_url)
        await db.start()
        try:
            yield db
        finally:
            await db.stop()

    async def verify(self, problems: list[str], what: str) -> None:
        """What the log said against the database's own counts, and any error the bridge logged."""
        actual = await self.db_counts()
        for d in ("in", "out"):
            if actual[d] != self.count(d):
                problems.append(
                    f"{what}: {self.count(d)} '{d}' messages seen committed but {actual[d]} in the store"
                )
        for line in self.errors:
            problems.append(f"{what}: the bridge logged an error: {line[:300]}")
        if self.warnings:
            problems.append(
                f"{what}: the bridge logged warnings: "
                + ", ".join(f"{k} x{n}" for k, n in sorted(self.warnings.items()))
            )
        self.errors.clear()
        self.warnings.clear()
