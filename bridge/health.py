"""Capture health: is every company account still receiving, and who is told when it is not.

A recording bridge's worst failure is a silent gap: clients write, nothing reaches the record,
and nobody knows. Connectors report each attempt to receive (``ReportsCapture``: a poll round
that came back, a webhook that arrived, a failure); the inbound path reports a Telegram Business
connection switched off; a probe asks WhatsApp for each number's quality rating. From these,
:class:`CaptureHealth` (plain values, no I/O, so its rules are tested alone) keeps four problems
per account:

- ``failing``: the last ``FAILURES_DOWN`` attempts in a row failed (a polling loop erroring, a
  webhook that cannot be committed);
- ``stale``: nothing received for ``capture_stale_minutes`` (a webhook not reached: a wrong URL
  at Meta, a proxy down). Measured on the bridge's clock (bridge.clock, which the tests move)
  *and* for at least ``REAL_GRACE_S`` of real time, so a clock jumped ahead while a long poll is
  out is not mistaken for a gap;
- ``disabled``: a Telegram Business owner disconnected the bot;
- ``quality``: WhatsApp lowered a number's quality rating below GREEN (Meta limits, then bans,
  numbers clients block or report).

Each problem starting or ending is one :class:`Transition`; :class:`CaptureMonitor` posts each
once to the "Houseline status" room, mentioning the compliance observers, and the metrics show
the current state (``houseline_capture_up`` 0 while failing, stale or disabled). The problems
announced and not yet over are kept as state events in the status room, so a restart in the
middle of an outage still announces its end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable

import aiohttp

from mautrix.api import Method, Path
from mautrix.errors import MatrixError
from mautrix.types import EventType, RoomID

from bridge.clock import Clock
from bridge.networks.base import Connector, ReportsCapture
from bridge.status_room import ROOM_KEY as STATUS_ROOM_KEY
from bridge.store import Store

log = logging.getLogger("houseline.health")

#: Failed attempts in a row before an account counts as failing (one failed poll is noise).
FAILURES_DOWN = 3
#: A gap must also last this long in real time (see the module docstring).
REAL_GRACE_S = 15.0
#: How often (bridge clock) the connectors' probes run: quality ratings, Telegram's webhook info.
PROBE_EVERY_S = 300.0
PROBLEMS = ("failing", "stale", "disabled", "quality")
#: The problems that mean messages are not reaching the record (quality only warns).
CAPTURE_PROBLEMS = ("failing", "stale", "disabled")
#: Quality ratings that are no problem (WhatsApp's GREEN; UNKNOWN: a new number not rated yet).
GOOD_QUALITY = ("GREEN", "UNKNOWN", "NA")
#: The status room's state events holding the announced, unfinished problems.
STATE_TYPE = EventType.find("net.houseline.capture", EventType.Class.STATE)


@dataclass
class AccountHealth:
    network: str
    account: str
    #: For people: "Telegram bot 12345", "WhatsApp number 1001".
    label: str
    #: Whether the account reports its own receiving (staleness and failures apply); a Telegram
    #: Business account rides on its bot's polling and is only ever "disabled".
    watched: bool
    #: Since when it is watched (bridge clock; and monotonic): the baseline before any success.
    since: float
    since_real: float
    last_ok: float | None = None
    last_ok_real: float | None = None
    #: The last attempt succeeded (``houseline_connector_up``).
    last_attempt_ok: bool = True
    failures: int = 0
    #: When the current run of failures began (bridge clock).
    failing_since: float | None = None
    last_error: str = ""
    disabled: bool = False
    disabled_since: float | None = None
    quality: str | None = None
    #: Problems announced and not over: problem -> (since, detail).
    announced: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: Problems carried over from before a restart: over only once the account shows it.
    carried: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Transition:
    network: str
    account: str
    label: str
    problem: str
    #: True: the problem started; False: it is over.
    active: bool
    detail: str
    #: When it was seen (bridge clock), and when the problem really began: the last success
    #: before a silence, the first of a run of failures (the period to check in the record).
    at: float
    since: float


class CaptureHealth:
    """The rules, on plain values: reports in, transitions out (each once)."""

    def __init__(
        self,
        stale_after_s: float,
        *,
        clock: Callable[[], float] = time.time,
        real: Callable[[], float] = time.monotonic,
        failures_down: int = FAILURES_DOWN,
        real_grace_s: float = REAL_GRACE_S,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.real = real
        self.failures_down = failures_down
        self.real_grace_s = real_grace_s
        self.accounts: dict[tuple[str, str], AccountHealth] = {}

    def _account(
        self, network: str, account: str, *, label: str | None = None, watched: bool = True
    ) -> AccountHealth:
        key = (network, account)
        health = self.accounts.get(key)
        if health is None:
            health = AccountHealth(
                network, account, label or f"{network} account {account}", watched, self.clock(), self.real()
            )
            self.accounts[key] = health
        elif label:
            health.label = label
        return health

    def watch(self, network: str, account: str, label: str) -> None:
        """An account whose connector reports its receiving: staleness counts from now."""
        self._account(network, account, label=label).watched = True

    def report(self, network: str, account: str, ok: bool, detail: str = "") -> None:
        health = self._account(network, account)
        health.last_attempt_ok = ok
        if ok:
            health.last_ok, health.last_ok_real = self.clock(), self.real()
            health.failures, health.failing_since = 0, None
            health.carried -= {"failing", "stale"}
        else:
            if health.failures == 0:
                health.failing_since = self.clock()
            health.failures += 1
            health.last_error = detail or "no reason given"

    def set_enabled(self, network: str, account: str, enabled: bool, label: str) -> None:
        health = self._account(network, account, label=label, watched=False)
        if not enabled and not health.disabled:
            health.disabled_since = self.clock()
        health.disabled = not enabled
        if enabled:
            health.carried.discard("disabled")

    def set_quality(self, network: str, account: str, rating: str) -> None:
        health = self._account(network, account)
        health.quality = rating.upper()
        health.carried.discard("quality")

    def carry(
        self,
        network: str,
        account: str,
        label: str,
        problem: str,
        since: float,
        detail: str,
        *,
        watched: bool,
    ) -> None:
        """A problem announced before a restart and not announced over: it stays until the
        account shows otherwise, and then its end is announced."""
        health = self._account(network, account, label=label, watched=watched)
        health.announced[problem] = (since, detail)
        health.carried.add(problem)
        if problem == "disabled":
            health.disabled = True

    def problems(self, health: AccountHealth) -> dict[str, str]:
        """The account's current problems, with what to say about each."""
        found: dict[str, str] = {}
        if health.watched and (health.failures >= self.failures_down or "failing" in health.carried):
            found["failing"] = (
                f"the last {health.failures} attempts to receive failed; the last error: {health.last_error}"
                if health.failures
                else health.announced.get("failing", (0, "receiving failed"))[1]
            )
        if health.watched and (self._stale(health) or "stale" in health.carried):
            last = health.last_ok
            found["stale"] = f"nothing received for {_minutes(self.clock() - (last or health.since))}" + (
                f" (the last at {_when(last)})" if last is not None else " (nothing since the bridge started)"
            )
        if health.disabled:
            found["disabled"] = "its owner disconnected it from Houseline"
        if (health.quality is not None and health.quality not in GOOD_QUALITY) or "quality" in health.carried:
            found["quality"] = f"the network rates the account's quality {health.quality or 'low'}"
        return found

    def _stale(self, health: AccountHealth) -> bool:
        last = health.last_ok if health.last_ok is not None else health.since
        last_real = health.last_ok_real if health.last_ok_real is not None else health.since_real
        return self.clock() - last > self.stale_after_s and self.real() - last_real > self.real_grace_s

    def _began(self, health: AccountHealth, problem: str, now: float) -> float:
        if problem == "stale":
            return health.last_ok if health.last_ok is not None else health.since
        if problem == "failing":
            return health.failing_since or now
        if problem == "disabled":
            return health.disabled_since or now
        return now

    def capture_up(self, health: AccountHealth) -> bool:
        return not any(p in CAPTURE_PROBLEMS for p in self.problems(health))

    def transitions(self) -> list[Transition]:
        """What started or ended since the last call; each start and end is returned once."""
        now = self.clock()
        out: list[Transition] = []
        for health in self.accounts.values():
            current = self.problems(health)
            for problem in PROBLEMS:
                if problem in current and problem not in health.announced:
                    began = self._began(health, problem, now)
                    health.announced[problem] = (began, current[problem])
                    out.append(
                        Transition(
                            health.network,
                            health.account,
                            health.label,
                            problem,
                            True,
                            current[problem],
                            now,
                            began,
                        )
                    )
                elif problem not in current and problem in health.announced:
                    since, detail = health.announced.pop(problem)
                    out.append(
                        Transition(
                            health.network, health.account, health.label, problem, False, detail, now, since
                        )
                    )
        return out


def notice_text(
    t: Transition, health: AccountHealth | None = None, *, network_name: str = "the network", keeps: str = ""
) -> str:
    """What the observers read. Starts say what stopped and what it means for the record; ends
    say for how long, so the gap can be checked in the conversations. ``keeps``: how long the
    network holds what it could not deliver (its capabilities say)."""
    if t.problem == "quality":
        if t.active:
            return (
                f"Capture at risk: {t.label}: {t.detail}. The network lowers the rating when clients block or report the "
                "account, then limits its messaging and may disconnect it; messages still arrive for now."
            )
        rating = health.quality if health is not None and health.quality else "GREEN"
        return f"Capture recovered: {t.label}: the network rates the account's quality {rating} again."
    if t.active and t.problem == "stale":
        return (
            f"Capture stopped: {t.label}: {t.detail}. If clients are writing, their messages are not reaching the "
            "record: check that the network can reach the bridge (its webhook address, the proxy in front). A recovery "
            "is announced here."
        )
    if t.active:
        return (
            f"Capture stopped: {t.label}: {t.detail}. Client messages on this account are not reaching the record "
            "until it recovers; a recovery is announced here."
        )
    gap = f"from {_when(t.since)} to {_when(t.at)}, {_minutes(t.at - t.since)}"
    if t.problem == "disabled":
        return f"Capture recovered: {t.label} is connected again (it was disconnected {gap}); its conversations are bridged once more."
    return (
        f"Capture recovered: {t.label} is receiving again (it had stopped {gap}). Messages sent meanwhile arrive now "
        f"if {network_name} still holds them{f' ({keeps})' if keeps else ''}; check that period in the conversations."
    )


#: Posts a notice to the status room (bridge.status_room.StatusRoom.post).
Post = Callable[[str], Awaitable[str]]
#: The status room's id if it exists already (never creates it).
ExistingRoom = Callable[[], Awaitable[str | None]]


class CaptureMonitor:
    """Capture health in the running bridge: the connectors' listener, the probes, and the
    notices. Transitions that could not be posted (the homeserver away) are posted later, in
    order: a transition is never dropped."""

    def __init__(
        self,
        health: CaptureHealth,
        connectors: dict[str, Connector],
        clock: Clock,
        post: Post,
        *,
        bot: Any = None,
        existing_room: ExistingRoom | None = None,
        probe_every_s: float = PROBE_EVERY_S,
        tick_s: float = 1.0,
    ) -> None:
        self.health = health
        self.connectors = connectors
        self.clock = clock
        self.post = post
        #: The bot's intent (state events in the status room); None keeps nothing across restarts.
        self.bot = bot
        self.existing_room = existing_room
        self.probe_every_s = probe_every_s
        self.tick_s = tick_s
        self._unsent: list[Transition] = []
        self._next_probe = 0.0
        self._probing: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def _notice_text(self, t: Transition) -> str:
        connector = self.connectors.get(t.network)
        return notice_text(
            t,
            self.health.accounts.get((t.network, t.account)),
            network_name=connector.display_name if connector is not None else t.network,
            keeps=connector.capabilities.keeps_undelivered if connector is not None else "",
        )

    # what the parts report (synchronous and cheap: called from connectors' loops)

    def listener(self, network: str, account: str, ok: bool, detail: str) -> None:
        self.health.report(network, account, ok, detail)
        if not ok:
            log.warning(
                "event=capture_attempt_failed network=%s account=%s detail=%r", network, account, detail
            )

    def account_changed(self, network: str, account: str, enabled: bool, owner: str) -> None:
        """A company account switched on or off on the network's side (Telegram Business)."""
        self.health.set_enabled(network, account, enabled, self._label(network, account, owner))

    def _label(self, network: str, account: str, owner: str | None = None) -> str:
        connector = self.connectors.get(network)
        name = connector.display_name if connector is not None else network
        if owner is not None:
            return f"the {name} Business account of {owner} ({account})"
        own = connector.capture_label(account) if isinstance(connector, ReportsCapture) else ""
        return own or f"{name} account {account}"

    # running

    def attach(self) -> None:
        """Before the connectors start: their first reports must reach the state."""
        for connector in self.connectors.values():
            if isinstance(connector, ReportsCapture):
                connector.set_capture_listener(self.listener)

    async def start(self, disabled_accounts: Iterable[tuple[str, str, str]] = ()) -> None:
        """After the connectors started (their accounts are known). ``disabled_accounts``:
        (network, account, owner) switched off before this start, from the store."""
        for network, connector in self.connectors.items():
            if isinstance(connector, ReportsCapture):
                for account in connector.capture_accounts():
                    self.health.watch(network, account, self._label(network, account))
        await self._restore()
        for network, account, owner in disabled_accounts:
            key = (network, account)
            if key not in self.health.accounts or not self.health.accounts[key].disabled:
                # Disconnected while the bridge was down or before this feature: say so once.
                self.account_changed(network, account, False, owner)
        self._task = asyncio.create_task(self._run(), name="capture-health")
        log.info(
            "event=capture_health_started accounts=%d stale_after_s=%d",
            len(self.health.accounts),
            self.health.stale_after_s,
        )

    async def stop(self) -> None:
        for task in (self._task, self._probing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=capture_health_tick_failed")
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        now = self.clock.now()
        if now >= self._next_probe and (self._probing is None or self._probing.done()):
            self._next_probe = now + self.probe_every_s
            self._probing = asyncio.create_task(self._probe(), name="capture-probe")
        for t in self.health.transitions():
            log.warning(
                "event=capture_%s network=%s account=%s problem=%s detail=%r",
                "stopped" if t.active else "recovered",
                t.network,
                t.account,
                t.problem,
                t.detail,
            )
            self._unsent.append(t)
        while self._unsent:
            t = self._unsent[0]
            try:
                await self.post(self._notice_text(t))
            except (MatrixError, aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                log.warning(
                    "event=capture_notice_failed problem=%s account=%s error=%s retry=next_tick",
                    t.problem,
                    t.account,
                    e,
                )
                return
            self._unsent.pop(0)
            await self._remember(t)

    async def _probe(self) -> None:
        """The connectors' own checks; a probe that fails tells nothing (logged)."""
        for network, connector in self.connectors.items():
            if not isinstance(connector, ReportsCapture):
                continue
            try:
                await connector.probe_capture()
                for account, rating in (await connector.account_quality()).items():
                    self.health.set_quality(network, account, rating)
            except Exception:
                log.exception("event=capture_probe_failed network=%s", network)

    # across restarts: the announced, unfinished problems as state events in the status room

    async def _remember(self, t: Transition) -> None:
        room_id = await self.existing_room() if self.existing_room is not None else None
        if self.bot is None or room_id is None:
            return
        health = self.health.accounts.get((t.network, t.account))
        content = {
            "network": t.network,
            "account": t.account,
            "label": t.label,
            "problem": t.problem,
            "active": t.active,
            # Matrix JSON has no floats: times in ms.
            "detail": t.detail,
            "since_ms": int(t.since * 1000),
            "watched": bool(health and health.watched),
        }
        try:
            await self.bot.send_state_event(
                RoomID(room_id), STATE_TYPE, content, state_key=_state_key(t.network, t.account, t.problem)
            )
        except MatrixError as e:
            log.warning(
                "event=capture_state_not_saved problem=%s account=%s error=%s", t.problem, t.account, e
            )

    async def _restore(self) -> None:
        room_id = await self.existing_room() if self.existing_room is not None else None
        if self.bot is None or room_id is None:
            return
        try:
            events = await self.bot.api.request(Method.GET, Path.v3.rooms[room_id].state)
        except MatrixError as e:
            log.warning("event=capture_state_not_read room=%s error=%s", room_id, e)
            return
        for event in events if isinstance(events, list) else []:
            content = (
                event.get("content")
                if isinstance(event, dict) and event.get("type") == str(STATE_TYPE)
                else None
            )
            if (
                not isinstance(content, dict)
                or content.get("active") is not True
                or content.get("problem") not in PROBLEMS
            ):
                continue
            try:
                self.health.carry(
                    str(content["network"]),
                    str(content["account"]),
                    str(content.get("label") or content["account"]),
                    str(content["problem"]),
                    int(content.get("since_ms") or 0) / 1000,
                    str(content.get("detail") or ""),
                    watched=bool(content.get("watched", True)),
                )
            except (KeyError, TypeError, ValueError):
                continue
            log.info(
                "event=capture_problem_carried network=%s account=%s problem=%s",
                content["network"],
                content["account"],
                content["problem"],
            )


async def stored_status_room(store: Store) -> str | None:
    """The status room's id if the bot created it already (bridge.status_room keeps it in
    ``bridge_room``); unlike StatusRoom.room_id, never creates it: a healthy start must not."""
    return await store.db.fetchval("SELECT room_id FROM bridge_room WHERE name=$1", STATUS_ROOM_KEY)


def _state_key(network: str, account: str, problem: str) -> str:
    return f"{network}|{account}|{problem}"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _minutes(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
