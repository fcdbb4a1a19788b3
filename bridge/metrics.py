"""``GET /metrics``: what the bridge does and whether it still captures, for Prometheus.

A registry of the bridge's own (``CollectorRegistry``, not prometheus_client's global one: no
process/platform collectors nobody asked for, and tests can make several). Two kinds of series:

- counted as things happen, from the notify sink (bridge.notify): messages bridged per network,
  direction and kind, denials per rule, conversations created, SLA steps, delivery latency, and
  delivery retries (from the outbound path's retry hook);
- read at scrape time, from the store and the parts that keep state: outbox depth, held
  messages, waiting conversations and timers due, the webhook queues, and capture health (per
  company account: capture up, connector up, last success, problems, quality rating). Read when
  Prometheus asks rather than kept current, so they are never stale and cost nothing between
  scrapes.

Served on a listener of its own when ``metrics.listen_port`` is set, else by the HTTP API
(which mounts :func:`metrics_handler`). A token, when configured, is checked in constant time.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.listener import listen
from bridge.clock import Clock
from bridge.health import PROBLEMS, CaptureHealth
from bridge.integrations_config import MetricsConfig
from bridge.notify import HouseEvent

if TYPE_CHECKING:
    from bridge.reminders import Reminders
    from bridge.store import Store

log = logging.getLogger("houseline.metrics")

#: The classic text format generate_latest writes (Prometheus' default scrape format).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Employee message → network accepted it: seconds, from well under a second (idle) to an hour
#: (a network outage waited out by the outbox).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class ReceiverStats(Protocol):
    """What the metrics read of a webhook receiver (bridge.webhooks.ReceiverHealth)."""

    delivered: int
    failed: int
    failing: bool
    last_delivered_at: float | None


#: Undelivered webhook events per receiver (bridge.webhooks.WebhookDispatcher.queue_depth).
QueueDepth = Callable[[], Awaitable[Mapping[str, int]]]
#: Each webhook receiver's counters (WebhookDispatcher.health).
ReceiverStatsOf = Callable[[], Mapping[str, ReceiverStats]]


class _Scraped:
    """The scrape-time series, filled by Metrics.refresh just before each exposition."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with the config: not checked at registration


class Metrics:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        token: str | None = None,
        networks: Iterable[str] = (),
        health: CaptureHealth | None = None,
        reminders: Reminders | None = None,
        webhook_queue_depth: QueueDepth | None = None,
        webhook_receivers: ReceiverStatsOf | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        #: A scraper's bearer token (metrics.token); None: none asked for.
        self.token = token
        self.health = health
        self.reminders = reminders
        self.webhook_queue_depth = webhook_queue_depth
        self.webhook_receivers = webhook_receivers
        self.registry = CollectorRegistry()
        r = self.registry
        self.bridged = Counter(
            "houseline_messages_bridged",
            "Client and employee events bridged (in: client to portal, out: employee to client).",
            ["network", "direction", "kind"],
            registry=r,
        )
        self.denied = Counter(
            "houseline_messages_denied",
            "Employee messages the policy refused (deny) or held back (hold), per rule.",
            ["rule", "verdict"],
            registry=r,
        )
        self.created = Counter("houseline_conversations_created", "Portals created.", ["network"], registry=r)
        self.sla = Counter(
            "houseline_sla_breaches", "Reminder steps fired for unanswered clients.", ["step"], registry=r
        )
        self.latency = Histogram(
            "houseline_delivery_latency_seconds",
            "From an employee's event on the homeserver (origin_server_ts) to the network accepting it; includes time queued in the outbox.",
            ["network"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "houseline_delivery_retries",
            "Temporary delivery failures retried (outbound_retry).",
            ["network"],
            registry=r,
        )
        for network in networks:
            # Present from the start, so rate() and absent() alerts see zeros, not gaps.
            for direction in ("in", "out"):
                self.bridged.labels(network, direction, "message")
            self.retries.labels(network)
            self.latency.labels(network)
        self._scraped = _Scraped()
        r.register(self._scraped)  # type: ignore[arg-type]

    # counted as things happen

    async def sink(self, event: HouseEvent) -> None:
        """The notify sink (bridge.notify.Notifier.sinks)."""
        data = event.data
        if event.type in ("message.inbound", "message.outbound"):
            network = str(data.get("network") or "unknown")
            self.bridged.labels(
                network,
                "in" if event.type == "message.inbound" else "out",
                str(data.get("kind") or "message"),
            ).inc()
            sent = data.get("origin_server_ts")
            if (
                event.type == "message.outbound"
                and isinstance(sent, int)
                and not isinstance(sent, bool)
                and sent > 0
            ):
                self.latency.labels(network).observe(max(0.0, (event.at_ms - sent) / 1000))
        elif event.type == "message.denied":
            self.denied.labels(str(data.get("rule") or "unknown"), str(data.get("verdict") or "deny")).inc()
        elif event.type == "conversation.created":
            self.created.labels(str(data.get("network") or "unknown")).inc()
        elif event.type == "sla.breached":
            self.sla.labels(str(data.get("step") or "unknown")).inc()

    def retried(self, network: str) -> None:
        """The outbound path's retry hook (bridge.outbound.Outbound.on_retry)."""
        self.retries.labels(network).inc()

    # read at scrape time

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)

    async def refresh(self) -> None:
        """Everything read first (awaits), then swapped in at once: a concurrent scrape never
        sees half a refresh."""
        families = [
            _gauge(
                "houseline_outbox_depth",
                "Employee events queued for delivery.",
                await self.store.outbox_size(),
            ),
            _gauge(
                "houseline_held_messages",
                "Employee messages held back by policy until a condition is met.",
                await self.store.held_for_senior_count(),
            ),
        ]
        families += await self._timers()
        families += await self._webhooks()
        families += self._capture()
        self._scraped.families = families

    async def _timers(self) -> list[Metric]:
        waiting = await self.store.waiting()
        steps_due = (
            await reminder_steps_due(self.reminders, waiting, self.clock.now())
            if self.reminders is not None
            else 0
        )
        now_ms = self.clock.now_ms()
        absences_due = sum(1 for a in (await self.store.absences()).values() if a.until_ms <= now_ms)
        due = GaugeMetricFamily(
            "houseline_timers_due",
            "Timers whose time has passed and that the timer loop has not handled yet (should be 0 but for a second).",
            labels=["kind"],
        )
        due.add_metric(["reminder_step"], steps_due)
        due.add_metric(["absence_end"], absences_due)
        return [
            _gauge(
                "houseline_waiting_conversations",
                "Conversations whose client waits for an answer.",
                len(waiting),
            ),
            due,
        ]

    async def _webhooks(self) -> list[Metric]:
        out: list[Metric] = []
        if self.webhook_queue_depth is not None:
            depth = GaugeMetricFamily(
                "houseline_webhook_queue_depth",
                "Events queued for a webhook receiver, not delivered yet.",
                labels=["receiver"],
            )
            for name, count in sorted((await self.webhook_queue_depth()).items()):
                depth.add_metric([name], count)
            out.append(depth)
        if self.webhook_receivers is not None:
            stats = sorted(self.webhook_receivers().items())
            sent = CounterMetricFamily(
                "houseline_webhook_deliveries",
                "Webhook delivery attempts by outcome.",
                labels=["receiver", "result"],
            )
            failing = GaugeMetricFamily(
                "houseline_webhook_receiver_failing",
                "1 while a receiver is reported failing.",
                labels=["receiver"],
            )
            last = GaugeMetricFamily(
                "houseline_webhook_last_delivered_timestamp_seconds",
                "Last 2xx from a receiver (Unix seconds).",
                labels=["receiver"],
            )
            for name, s in stats:
                sent.add_metric([name, "delivered"], s.delivered)
                sent.add_metric([name, "failed"], s.failed)
                failing.add_metric([name], 1 if s.failing else 0)
                if s.last_delivered_at is not None:
                    last.add_metric([name], s.last_delivered_at)
            out += [sent, failing, last]
        return out

    def _capture(self) -> list[Metric]:
        if self.health is None:
            return []
        labels = ["network", "account"]
        up = GaugeMetricFamily(
            "houseline_capture_up",
            "1 while the account's messages reach the record; 0 while failing, stale or disconnected.",
            labels=labels,
        )
        connector = GaugeMetricFamily(
            "houseline_connector_up",
            "1 if the connector's last attempt to receive for the account (poll round, webhook) succeeded.",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "houseline_capture_last_success_timestamp_seconds",
            "Last successful poll round or webhook (Unix seconds, bridge clock).",
            labels=labels,
        )
        problem = GaugeMetricFamily(
            "houseline_capture_problem",
            "1 while the problem holds: failing, stale, disabled, quality.",
            labels=[*labels, "problem"],
        )
        quality = GaugeMetricFamily(
            "houseline_account_quality",
            "1 for the network's current quality rating of the account (WhatsApp).",
            labels=[*labels, "rating"],
        )
        for (network, account), h in sorted(self.health.accounts.items()):
            current = self.health.problems(h)
            up.add_metric([network, account], 1 if self.health.capture_up(h) else 0)
            if h.watched:
                connector.add_metric([network, account], 1 if h.last_attempt_ok else 0)
            if h.last_ok is not None:
                last.add_metric([network, account], h.last_ok)
            for name in PROBLEMS:
                problem.add_metric([network, account, name], 1 if name in current else 0)
            if h.quality is not None:
                quality.add_metric([network, account, h.quality], 1)
        return [up, connector, last, problem, quality]


async def reminder_steps_due(reminders: Reminders, waiting: list[Any], now: float) -> int:
    """Waiting conversations whose next reminder step is due, by the same rule as the tick
    (business hours included)."""
    steps = reminders.pb.policy.sla.steps()
    due = 0
    for row in waiting:
        if row.steps >= len(steps):
            continue
        portal = await reminders.pb.portals.by_room(row.room_id)
        if portal is not None and now >= reminders.due_at(portal, row.since_ms, steps[row.steps][1]):
            due += 1
    return due


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


# serving


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /metrics`` as an aiohttp handler (its own listener, or mounted by the HTTP API).
    With ``metrics.token`` set, ``Authorization: Bearer <token>`` is required, compared in
    constant time (401 with a JSON body otherwise)."""
    expected = f"Bearer {metrics.token}".encode() if metrics.token else None

    async def handle(request: web.Request) -> web.Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                log.warning(
                    "event=metrics_refused remote=%s has_header=%s",
                    request.remote,
                    "Authorization" in request.headers,
                )
                return web.json_response(
                    {"error": "unauthorized", "detail": "send Authorization: Bearer <metrics.token>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="houseline-metrics"'},
                )
        try:
            body = await metrics.render()
        except Exception:
            log.exception("event=metrics_failed")
            return web.json_response({"error": "metrics could not be read; see the bridge's log"}, status=500)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return handle


class MetricsServer:
    """The metrics' own listener (``metrics.listen_port`` set): GET /metrics only."""

    def __init__(self, config: MetricsConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", metrics_handler(self.metrics))
        self._runner, self.port = await listen(app, self.config.listen_host, self.config.listen_port)
        log.info(
            "event=metrics_listening host=%s port=%s path=/metrics token=%s",
            self.config.listen_host,
            self.port,
            "required" if self.metrics.token else "none",
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
