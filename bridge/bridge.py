"""The running bridge: wires the store, the appservice, the pipelines and the connectors."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from mautrix.errors import MatrixError
from mautrix.types import EventType, FileInfo

from appservice.registration import Registration
from appservice.server import HouselineAppService
from bridge import matrix_content as mc
from bridge.absences import Absences
from bridge.audit_log import AuditLog
from bridge.backoff import Backoff, Retrying
from bridge.catchup import Catchup, HomeserverWatch, QuietSweep
from bridge.clock import Clock
from bridge.commands import Commands
from bridge.config import Config, ConfigError, load_config
from bridge.health import CaptureHealth, CaptureMonitor, stored_status_room
from bridge.inbound import Inbound
from bridge.journal import Journal
from bridge.networks import spec_of
from bridge.networks.base import Connector, PictureSource
from bridge.networks.spec import BuildContext, MappedIds
from bridge.outbound import Outbound
from bridge.outbox import Outbox
from bridge.outreach import OutreachDesk
from bridge.policy_bot import PolicyBot
from bridge.portals import Portals
from bridge.reminders import Reminders
from bridge.reports.schedule import ReportSchedule
from bridge.review import ReviewDesk
from bridge.status_room import StatusRoom
from bridge.store import Store
from bridge.webhooks import WebhookDispatcher
from puppets.ghosts import Ghosts

if TYPE_CHECKING:
    from bridge.metrics import Metrics, MetricsServer

log = logging.getLogger("houseline.bridge")


class Bridge:
    def __init__(self, config: Config, registration: Registration) -> None:
        self.config = config
        self.registration = registration
        self.store = Store(config.database.url)
        self.az = HouselineAppService(
            server=config.homeserver.url,
            domain=config.homeserver.domain,
            as_token=registration.as_token,
            hs_token=registration.hs_token,
            bot_localpart=config.appservice.bot_localpart,
            id=config.appservice.id,
            log=logging.getLogger("mau.as"),
            bridge_name="houseline",
            verify_ssl=config.homeserver.verify_tls,
        )
        context = BuildContext(
            last_inbound=self.store.last_inbound_at,
            mapped_ids=MappedIds(
                highest_numeric=self.store.highest_numeric_remote_id, of_chat=self.store.remote_ids_of_chat
            ),
        )
        self.connectors: dict[str, Connector] = {
            name: spec_of(name).build(section, context) for name, section in config.networks.items()
        }
        self.inbound: Inbound | None = None
        #: The archive journal (archive.smtp in the config), None when not configured.
        self.journal: Journal | None = None
        self.outbound: Outbound | None = None
        self.clock = Clock.from_env()
        # Capture health is always on (the status room's notices); metrics only when configured.
        stale_minutes = config.metrics.capture_stale_minutes if config.metrics is not None else 10
        self.health = CaptureHealth(stale_minutes * 60, clock=self.clock.now)
        #: GET /metrics (bridge.metrics.Metrics), None unless ``metrics:`` is configured; served on
        #: its own listener (metrics.listen_port) or else by the HTTP API.
        self.metrics: Metrics | None = None
        self._metrics_server: MetricsServer | None = None
        self._timers: asyncio.Task[None] | None = None
        #: None unless the config names webhook receivers.
        self.webhooks: WebhookDispatcher | None = None
        self._started: list[str] = []

    async def start(self, *, homeserver_timeout: float = 120.0) -> None:
        t0 = time.monotonic()
        await self.store.start()
        self._started.append("store")
        await self.az.start(self.config.appservice.host, self.config.appservice.port)
        self._started.append("appservice")
        await self._wait_for_homeserver(homeserver_timeout)
        bot = self.az.intent
        await bot.ensure_registered()
        try:
            await bot.set_displayname(self.config.appservice.bot_displayname)
        except MatrixError as e:
            log.warning("event=bot_displayname_failed error=%s", e)

        ghosts = Ghosts(self.az, self.config.ghost_namer(), self.store, clock=self.clock.now)
        self.audit = AuditLog(self.store)
        portals = Portals(self.store, bot, self._assign)
        self.policy_bot = PolicyBot(
            config=self.config,
            az=self.az,
            store=self.store,
            portals=portals,
            ghosts=ghosts,
            audit=self.audit,
            connectors=self.connectors,
            policy=self.config.policy,
        )
        # Where the bridge tells the observers about its own health (webhooks, capture).
        self.status_room = StatusRoom(
            self.store, bot, lambda: tuple(sorted(self.policy_bot.policy.observers))
        )
        if self.config.webhooks:
            self.webhooks = WebhookDispatcher(
                self.store, self.config.webhooks, self.clock, report=self.status_room.post
            )
            self.policy_bot.notify.sinks.append(self.webhooks.sink())
        self.capture = CaptureMonitor(
            self.health,
            self.connectors,
            self.clock,
            self.status_room.post,
            bot=bot,
            existing_room=lambda: stored_status_room(self.store),
        )
        self.capture.attach()  # before the connectors start: their first reports count
        portals.initial_state = self.policy_bot.initial_state
        portals.on_created = self.policy_bot.portal_created
        self.portals = portals
        self.outbound = Outbound(
            az=self.az,
            store=self.store,
            portals=portals,
            ghosts=ghosts,
            connectors=self.connectors,
            portal_config=self.config.portals,
            policy=self.policy_bot,
        )
        self.outbox = Outbox(self.store, self.outbound.handle_event)
        self.policy_bot.wake_outbox = self.outbox.wake
        self.absences = Absences(self.policy_bot, self.clock)
        self.reminders = Reminders(self.policy_bot, self.clock)
        self.outreach = OutreachDesk(self.policy_bot, ghosts, self.outbox.enqueue, self.clock)
        self.review = ReviewDesk(self.policy_bot, self.clock, wake_outbox=self.outbox.wake)
        self.report_schedule = (
            ReportSchedule(self.config.reports.schedule, self.store, self.clock, self._scheduled_report)
            if self.config.reports is not None
            else None
        )
        self.outbound.review = self.review.before_send
        self.commands = Commands(
            self.policy_bot,
            self._reload_policy,
            self.export_portal,
            absences=self.absences,
            outreach=self.outreach,
            reminders=self.reminders,
            review=self.review,
            report=self.report_to_room,
        )
        self.inbound = Inbound(
            self.store,
            portals,
            ghosts,
            {n: c.display_name for n, c in self.connectors.items()},
            after_message=self._after_client_message,
            claim_invite=self.outreach.claim,
            notifier=self.policy_bot.notify,
            on_account=self.capture.account_changed,
            pictures={n: c.fetch_picture for n, c in self.connectors.items() if isinstance(c, PictureSource)},
        )
        if self.config.metrics is not None:
            self._setup_metrics()
        catchup = Catchup(
            intent=bot,
            store=self.store,
            handle=self._on_events,
            is_ours=self.policy_bot.is_ours,
            rooms=self._portal_rooms,
            remember=self._read_back,
        )
        sweep = QuietSweep(catchup, self.outbox.requeue)
        self.outbox.settle = sweep.settle
        # Before the outbox starts: rooms a sweep still owed a read are read before delivering.
        await sweep.resume()
        await self.outbox.start()
        self._started.append("outbox")
        if self.config.archive is not None:
            self.journal = Journal(
                self.config.archive,
                db=self.store.db,
                intent=bot,
                bot=self.az.bot_mxid,
                is_ghost=ghosts.is_ghost,
                portal_of=portals.by_room,
                clock=self.clock,
            )
            await self.journal.start()
            self._started.append("journal")
        if self.webhooks is not None:
            await self.webhooks.start()
            self._started.append("webhooks")
        self.az.events_handler = self._on_events
        self.az.ephemeral_handler = self.outbound.handle_ephemeral
        self.watch = HomeserverWatch(
            intent=bot,
            catchup=catchup,
            pause=self.outbox.pause,
            resume=self.outbox.resume,
            requeue=self.outbox.requeue,
            on_back=lambda: self.az.strands.arm("homeserver_back"),
            sweep=sweep,
        )
        await self.watch.start()
        self._started.append("watch")
        for name, connector in self.connectors.items():
            await connector.start(self.inbound.handle)
            self._started.append(f"connector:{name}")
        await self.capture.start(
            [(a.network, a.account_id, a.owner_name) for a in await self.store.disabled_accounts()]
        )
        self._started.append("capture")
        if self.config.metrics is not None and self.config.metrics.listen_port is not None:
            from bridge.metrics import MetricsServer

            self._metrics_server = MetricsServer(self.config.metrics, self.metrics)
            await self._metrics_server.start()
            self._started.append("metrics")
        elif self.config.metrics is not None and self.config.api is None:
            log.warning(
                "event=metrics_not_served reason='metrics.listen_port is not set and the api is off' fix='set metrics.listen_port or enable api'"
            )
        self._timers = asyncio.create_task(self._run_timers(), name="timers")
        self._started.append("timers")
        if self.config.api is not None:
            from bridge.api.server import ApiServer

            on_api = self.config.metrics is not None and self.config.metrics.listen_port is None
            self.api = ApiServer(self.config.api, self, metrics=self.metrics if on_api else None)
            await self.api.start()
            self._started.append("api")
        self.az.ready = True
        log.info(
            "event=ready homeserver=%s listen=%s:%d networks=%s portals=%d startup_ms=%d",
            self.config.homeserver.url,
            self.config.appservice.host,
            self.config.appservice.port,
            ",".join(self.connectors) or "none",
            await self.store.count_portals(),
            (time.monotonic() - t0) * 1000,
        )

    def _setup_metrics(self) -> None:
        from bridge.metrics import Metrics

        webhooks = self.webhooks
        self.metrics = Metrics(
            self.store,
            self.clock,
            token=self.config.metrics.token,
            networks=self.connectors,
            health=self.health,
            reminders=self.reminders,
            webhook_queue_depth=webhooks.queue_depth if webhooks is not None else None,
            webhook_receivers=(lambda: webhooks.health) if webhooks is not None else None,
        )
        self.policy_bot.notify.sinks.append(self.metrics.sink)
        self.outbound.on_retry = self.metrics.retried

    async def _after_client_message(self, portal, event) -> None:
        """What follows a client's message once it is recorded, in this order: its compliance
        review, the disclaimer (first contact), the outcome of an invitation link, an absence
        notice, an out-of-hours notice."""
        for step in (
            self.review.client_wrote,  # first: the record's review does not wait on notices
            self.policy_bot.ensure_disclaimer,
            self.outreach.after_message,
            self.absences.client_wrote,
            self.reminders.client_wrote,
        ):
            try:
                await step(portal, event)
            except MatrixError as e:
                # The message is recorded; a notice that could not go out must not stop the next.
                log.warning(
                    "event=after_message_failed step=%s room=%s error=%s", step.__name__, portal.room_id, e
                )

    async def _run_timers(self, tick: float = 1.0) -> None:
        """Reminders and absences that are due, once a second (the clock may be moved by the
        tests, so due times are compared, never slept towards). A failing round is logged and
        the next one tries again: the rows stay in the store until their step is counted."""
        while True:
            jobs = [self.absences.expire, self.reminders.tick]
            if self.report_schedule is not None:
                jobs.append(self.report_schedule.tick)
            for job in jobs:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("event=timers_failed job=%s", job.__name__)
            await asyncio.sleep(tick)

    async def _read_back(self, raw: dict) -> None:
        """Every event the catch-up reads back. It hands on only others' events; the bridge's
        own messages (ghosts', the bot's) that a homeserver outage kept from it are queued for
        the journal here, so the archive misses none of them either."""
        await self.az.remember_state(raw)
        if (
            self.journal is not None
            and self.policy_bot.is_ours(str(raw.get("sender")))
            and await self.portals.by_room(str(raw.get("room_id")))
        ):
            await self.journal.capture([raw])

    async def _portal_rooms(self) -> list[str]:
        return await self.store.portal_room_ids()

    async def _assign(self, chat, requested=None):
        return await self.policy_bot.assignees(chat, requested)

    async def _reload_policy(self):
        """Re-read the policy from the config file; a policy with errors never takes effect."""
        if self.config.path is None:
            return None, ["the bridge was not started from a config file"]
        try:
            fresh = load_config(self.config.path)
        except ConfigError as e:
            return None, [p for p in e.problems if p.startswith("policies")] or e.problems
        log.info("event=policy_reloaded")
        return fresh.policy, []

    async def export_portal(self, portal, fmt: str, *, actor: str) -> str:
        """An admin's ``!hl export`` or the API's: written under exports/ next to the config,
        audited with who asked."""
        from bridge.record.export import ExportScope, run_export

        base = self.config.path.parent if self.config.path else Path.cwd()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = base / "exports" / f"{stamp}-{portal.network}-{portal.chat_id}-{fmt}"
        result = await run_export(
            self.config,
            as_token=self.registration.as_token,
            store=self.store,
            scope=ExportScope(rooms=(portal.room_id,)),
            fmt=fmt,
            out_dir=out,
            audit=self.audit,
        )
        log.info("event=export_written room=%s events=%d path=%s", portal.room_id, result.events, out)
        await self.audit.record(
            actor=actor,
            action="export",
            subject=portal.room_id,
            verdict="allow",
            rule="commands.admin",
            format=fmt,
            path=str(out),
        )
        return str(out)

    async def report_to_room(
        self, actor: str, since: str | None, until: str | None, room_id: str
    ) -> tuple[str, bytes]:
        """An admin's ``!hl report``: the page is posted as a file in ``room_id``; returns the
        summary line and the page. Raises ValueError for a date it cannot read."""
        from bridge.record.export import ExportError, parse_time

        try:
            until_ms = parse_time(until, "until") or self.clock.now_ms()
            since_ms = parse_time(since, "since") or until_ms - 7 * 86_400_000
        except ExportError as e:
            raise ValueError(str(e)) from None
        if since_ms >= until_ms:
            raise ValueError("--since must be before --until.")
        return await self._post_report(actor, since_ms, until_ms, room_id)

    async def _scheduled_report(self, since_ms: int, until_ms: int) -> None:
        """``reports.schedule``: the period's report in the compliance review room."""
        room_id = await self.review.main_room()
        summary, _ = await self._post_report(self.az.bot_mxid, since_ms, until_ms, room_id)
        await self.az.intent.send_message_event(room_id, EventType.ROOM_MESSAGE, mc.notice(summary))

    async def _post_report(self, actor: str, since_ms: int, until_ms: int, room_id: str) -> tuple[str, bytes]:
        """The report for a period as one HTML page posted in ``room_id`` (houseline report
        prints the same), audited; returns its summary line and the page."""
        from bridge.reports.collect import produce
        from bridge.reports.render import to_html

        report = await produce(
            self.store,
            self.policy_bot.policy,
            homeserver_url=self.config.homeserver.url,
            as_token=self.registration.as_token,
            bot=self.az.bot_mxid,
            verify_tls=self.config.homeserver.verify_tls,
            since_ms=since_ms,
            until_ms=until_ms,
        )
        page = to_html(report, company=self.config.portals.company).encode()
        day = lambda ms: time.strftime("%Y%m%d", time.gmtime(ms / 1000))  # noqa: E731
        name = f"houseline-report-{day(since_ms)}-{day(until_ms)}.html"
        bot = self.az.intent
        mxc = await bot.upload_media(page, mime_type="text/html", filename=name)
        await bot.send_file(room_id, mxc, file_name=name, info=FileInfo(mimetype="text/html", size=len(page)))
        await self.audit.record(actor=actor, action="report", subject=room_id, verdict="allow", rule="commands.admin",
                                since=since_ms, until=until_ms)  # fmt: skip
        t = report.total
        return (
            f"Report {name}: {t.conversations} conversation(s), {t.messages_in} client message(s), "
            f"{t.messages_out} answer(s), {t.over_sla} wait(s) over the SLA, {t.denials_total} denial(s), "
            f"{t.reviews_opened} review item(s) opened.",
            page,
        )

    async def _on_events(self, events: list[dict]) -> None:
        """Policy first (membership, commands), then what goes to clients. An event already
        handled (a resent transaction, a catch-up that found it first) is handled once."""
        ids = [e["event_id"] for e in events if isinstance(e.get("event_id"), str) and e["event_id"]]
        if ids:
            seen = await self.store.seen_events(ids)
            events = [e for e in events if e.get("event_id") not in seen]
        outgoing: list[dict] = []
        journaled: list[dict] = []
        for raw in events:
            room_id = raw.get("room_id")
            if not isinstance(room_id, str) or not isinstance(raw.get("sender"), str):
                continue
            portal = await self.portals.by_room(room_id)
            if portal is not None:
                journaled.append(raw)
            if raw.get("type") == "m.room.member":
                if (
                    raw.get("state_key") == self.az.bot_mxid
                    and (raw.get("content") or {}).get("membership") == "invite"
                    and portal is None
                ):
                    await self.commands.on_invite(raw)
                elif portal is not None:
                    await self.policy_bot.on_member(raw, portal)
                continue
            if (
                portal is None
                and raw.get("type") == "m.reaction"
                and await self.review.is_review_room(room_id)
            ):
                await self.review.on_reaction(raw)
                continue
            if raw.get("sender") != self.az.bot_mxid and self.commands.is_command(raw):
                if portal is not None and self.commands.is_template(raw):
                    outgoing.append(raw)
                else:
                    await self.commands.handle(raw, portal)
                continue
            if portal is not None and not self.policy_bot.is_ours(raw["sender"]) and "state_key" not in raw:
                outgoing.append(raw)  # the bridge's own events never go back out
        # For the archive journal: every portal message, in one commit, before anything is
        # marked seen (a seen event always has its journal row or its receipt).
        if self.journal is not None:
            await self.journal.capture(journaled)
        # Durably queued before the homeserver is answered; delivered by the outbox's workers.
        await self.outbox.enqueue(outgoing)  # marks the queued events seen in the same commit
        queued = {e.get("event_id") for e in outgoing}
        await self.store.mark_seen(
            [
                (e["event_id"], e["room_id"])
                for e in events
                if isinstance(e.get("event_id"), str)
                and e["event_id"]
                and e["event_id"] not in queued
                and isinstance(e.get("room_id"), str)
            ]
        )

    async def _wait_for_homeserver(self, timeout: float) -> None:
        """The homeserver may start after us (a reboot, a compose file): wait, saying so."""
        deadline = time.monotonic() + timeout
        retry = Retrying(Backoff(first=0.2, cap=5.0))
        while True:
            try:
                await self.az.intent.versions(no_cache=True)
                return
            except (aiohttp.ClientError, MatrixError, asyncio.TimeoutError, OSError) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"homeserver at {self.config.homeserver.url} did not answer within {timeout:.0f}s"
                    ) from e
                log.warning(
                    "event=homeserver_unreachable url=%s error=%s retry_in=%.1fs",
                    self.config.homeserver.url,
                    type(e).__name__,
                    retry.current,
                )
                await asyncio.sleep(retry.next_delay())

    async def stop(self) -> None:
        # The outbox first: its workers must not meet a connector that is already closed (they
        # would report the queued messages as failed); what is queued stays for the next start.
        order = sorted(reversed(self._started), key=lambda name: name not in ("timers", "watch", "outbox"))
        for name in order:
            try:
                if name.startswith("connector:"):
                    await self.connectors[name.split(":", 1)[1]].stop()
                elif name == "appservice":
                    await self.az.stop()
                elif name == "outbox":
                    await self.outbox.stop()
                elif name == "journal" and self.journal is not None:
                    await self.journal.stop()
                elif name == "webhooks" and self.webhooks is not None:
                    await self.webhooks.stop()
                elif name == "watch":
                    await self.watch.stop()
                elif name == "api":
                    await self.api.stop()
                elif name == "capture":
                    await self.capture.stop()
                elif name == "metrics" and self._metrics_server is not None:
                    await self._metrics_server.stop()
                elif name == "timers" and self._timers is not None:
                    self._timers.cancel()
                    await asyncio.gather(self._timers, return_exceptions=True)
                elif name == "store":
                    await self.store.stop()
            except Exception:
                log.exception("event=stop_failed part=%s", name)
        self._started.clear()
        log.info("event=stopped")
