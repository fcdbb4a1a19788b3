"""The appservice HTTP side: authenticated transactions from the homeserver.

Built on :class:`mautrix.appservice.AppService` (intents, client API, state store), with our own
routes because the bridge needs three things mautrix's stock handler does not give: the
``hs_token`` compared in constant time with the status codes the specification names (401 when
missing, 403 when wrong), a transaction answered only after its events were handled (an error
answers 500 so the homeserver retries instead of the events being lost), and a redelivered
transaction that is still being handled joined rather than handled twice.

A transaction is recognised as redelivered by its id *and* its events: Synapse on SQLite numbers
transactions again from 1 after a restart (it derives the next id from the unsent ones, and a
delivered one is deleted; element-hq/synapse#14556), so an id alone would pass new events for
ones already handled and drop them without a word.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from typing import Awaitable, Callable

from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store import MemoryStateStore
from mautrix.types import Event, EventType
from mautrix.types.util.serializable import SerializerError

from appservice.strands import StrandGuard

log = logging.getLogger("houseline.appservice")

#: Receives the raw event dicts exactly as the homeserver sent them (mautrix's typed events
#: normalise some contents, e.g. edits, which the bridge must see as sent).
EventsHandler = Callable[[list[dict]], Awaitable[None]]

#: Synapse sends at most 100 events per transaction; 10 MiB leaves room for large state events.
MAX_TRANSACTION_BYTES = 10 * 1024 * 1024
#: How many completed transactions are remembered for deduplication.
_REMEMBERED_TXNS = 4096
_OPEN_PATHS = frozenset({"/_matrix/mau/live", "/_matrix/mau/ready"})


class MemoryASStateStore(MemoryStateStore, ASStateStore):
    """mautrix's in-memory client state store with the appservice additions."""

    def __init__(self) -> None:
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


def _matrix_error(status: int, errcode: str, error: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error}, status=status)


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison, so response timing leaks nothing about the token."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _token_from(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    return request.query.get("access_token")


def fingerprint(body: dict) -> str:
    """What a redelivery of a transaction repeats: its events, by id, in order (a resend is
    built again from the stored ids, so ages and other unsigned fields may differ). Typing and
    receipts are left out: Synapse resends a transaction without them, and they are best effort
    anyway, so a transaction of those alone is told apart by its id only."""
    events = body.get("events", [])
    if not events:
        return ""
    ids = [
        e["event_id"]
        if isinstance(e, dict) and isinstance(e.get("event_id"), str)
        else json.dumps(
            {k: v for k, v in e.items() if k != "unsigned"} if isinstance(e, dict) else e,
            sort_keys=True,
            default=str,
        )
        for e in events
    ]
    return hashlib.sha256(json.dumps(ids).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _well_formed(raw: dict) -> bool:
    """The fields the bridge relies on have the types the specification gives them."""
    return (
        isinstance(raw.get("type"), str)
        and isinstance(raw.get("room_id", ""), str)
        and isinstance(raw.get("sender", ""), str)
        and isinstance(raw.get("event_id", ""), str)
        and ("state_key" not in raw or isinstance(raw["state_key"], str))
        and isinstance(raw.get("content", {}), dict)
    )


class HouselineAppService(AppService):
    """An AppService whose HTTP routes are authenticated and durable-by-acknowledgement."""

    def __init__(self, *args, **kwargs) -> None:
        self.events_handler: EventsHandler | None = None
        #: Typing and receipts: best effort, never fail a transaction.
        self.ephemeral_handler: EventsHandler | None = None
        #: transaction id -> the fingerprint of the transaction handled under it
        self._done_txns: OrderedDict[str, str] = OrderedDict()
        self._running_txns: dict[tuple[str, str], asyncio.Task[None]] = {}
        #: A process that just started was unreachable a moment ago: the homeserver may be
        #: recovering, and a recovery's end is where it strands a transaction.
        self.strands = StrandGuard()
        self.strands.arm("start")
        kwargs.setdefault("state_store", MemoryASStateStore())
        kwargs["aiohttp_params"] = {
            "client_max_size": MAX_TRANSACTION_BYTES,
            "middlewares": [self._auth_middleware],
        }
        super().__init__(*args, **kwargs)

    # mautrix calls this from __init__; we install our own handlers instead of its stock ones.
    def register_routes(self, app: web.Application) -> None:
        for prefix in ("/_matrix/app/v1", ""):
            app.router.add_put(prefix + "/transactions/{transaction_id}", self._on_transaction)
            app.router.add_get(prefix + "/users/{user_id}", self._on_query)
            app.router.add_get(prefix + "/rooms/{alias}", self._on_query)
        app.router.add_post("/_matrix/app/v1/ping", self._on_ping)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path in _OPEN_PATHS:
            return await handler(request)
        token = _token_from(request)
        if token is None:
            log.warning("event=as_auth_refused reason=missing_token path=%s", request.path)
            return _matrix_error(401, "M_UNAUTHORIZED", "Missing hs_token")
        if not token_matches(token, self.hs_token):
            log.warning("event=as_auth_refused reason=wrong_token path=%s", request.path)
            return _matrix_error(403, "M_FORBIDDEN", "Invalid hs_token")
        try:
            return await handler(request)
        except web.HTTPException as e:
            # aiohttp's own refusals (too large, unknown route, wrong method) in the Matrix shape.
            if e.status < 400:
                raise
            errcode = {413: "M_TOO_LARGE", 404: "M_UNRECOGNIZED", 405: "M_UNRECOGNIZED"}.get(
                e.status, "M_UNKNOWN"
            )
            log.warning("event=as_request_refused status=%d path=%s", e.status, request.path)
            return _matrix_error(e.status, errcode, e.reason)

    async def _on_query(self, request: web.Request) -> web.Response:
        # Ghosts are created when a client writes, never on a homeserver's lookup.
        return _matrix_error(404, "M_NOT_FOUND", "Not provisioned on demand")

    async def _on_ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _on_transaction(self, request: web.Request) -> web.Response:
        txn_id = request.match_info["transaction_id"]
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError, RecursionError):
            log.warning("event=as_txn_rejected txn=%s reason=not_json", txn_id)
            return _matrix_error(400, "M_NOT_JSON", "Body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
            log.warning("event=as_txn_rejected txn=%s reason=bad_shape", txn_id)
            return _matrix_error(400, "M_BAD_JSON", "Expected an object with an 'events' list")

        key = (txn_id, fingerprint(body))
        done = self._done_txns.get(txn_id)
        if done == key[1]:
            return web.json_response({})  # a redelivery of one already handled
        task = self._running_txns.get(key)
        if task is None:
            if done is not None:
                # The homeserver numbers from the start again: its sequence restarts here.
                log.info("event=as_txn_sequence_restarted txn=%s reason=id_reused_for_other_events", txn_id)
                self.strands.renumbered(txn_id)
            if not self.strands.admit(txn_id):
                return _matrix_error(503, "M_UNKNOWN", "An earlier transaction has not arrived; resend")
            ephemeral = body.get("ephemeral", body.get("de.sorunome.msc2409.ephemeral", []))
            task = asyncio.ensure_future(
                self._handle_transaction(
                    txn_id, body.get("events", []), ephemeral if isinstance(ephemeral, list) else []
                )
            )
            self._running_txns[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        try:
            # shield: a homeserver that gives up on the request must not cancel the handling.
            await asyncio.shield(task)
        except Exception:
            log.exception("event=as_txn_failed txn=%s", txn_id)
            self.strands.arm("txn_failed")
            return _matrix_error(500, "M_UNKNOWN", "Transaction could not be handled; retry")
        return web.json_response({})

    def _finished(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        """Remembered as done the moment its handling succeeded, not when the request that
        awaited it resumes: a redelivery arriving in between finds it done, not handled twice."""
        self._running_txns.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        txn_id, events = key
        self._done_txns[txn_id] = events
        self._done_txns.move_to_end(txn_id)
        while len(self._done_txns) > _REMEMBERED_TXNS:
            self._done_txns.popitem(last=False)

    async def remember_state(self, raw: dict) -> bool:
        """Keep the state store (room members, their names) current with an event the bridge
        is about to handle; False if the event cannot be decoded. Every event from the homeserver
        passes here first, a transaction's or a catch-up's, so the policy engine can take a
        room's members from the store instead of asking the homeserver for each message."""
        try:
            event = Event.deserialize(copy.deepcopy(raw))
            cls = EventType.Class.STATE if raw.get("state_key") is not None else EventType.Class.MESSAGE
            event.type = event.type.with_class(cls)
            await self.state_store.update_state(event)
        except (SerializerError, KeyError, TypeError, ValueError, AttributeError, RecursionError):
            return False
        return True

    async def _handle_transaction(self, txn_id: str, raw_events: list, ephemeral: list) -> None:
        edus = [e for e in ephemeral if isinstance(e, dict)]
        if edus and self.ephemeral_handler is not None:
            try:
                await self.ephemeral_handler(edus)
            except Exception:
                log.exception("event=as_ephemeral_failed txn=%s", txn_id)
        events: list[dict] = []
        for raw in raw_events:
            if not isinstance(raw, dict):
                log.warning("event=as_event_skipped txn=%s reason=not_an_object", txn_id)
                continue
            if not _well_formed(raw):
                log.warning("event=as_event_skipped txn=%s reason=bad_fields", txn_id)
                continue
            if not await self.remember_state(raw):
                # One undecodable event must not hold up the transaction (the homeserver would
                # retry it forever): it is skipped, with a line in the log.
                log.warning(
                    "event=as_event_skipped txn=%s reason=undecodable type=%r",
                    txn_id,
                    str(raw.get("type"))[:100],
                )
                continue
            events.append(raw)
        log.debug("event=as_txn txn=%s events=%d", txn_id, len(events))
        if not events:
            return
        if self.events_handler is None:
            # Still starting: answering 200 would lose these events; the homeserver retries.
            raise RuntimeError("bridge is still starting")
        await self.events_handler(events)
