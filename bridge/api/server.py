"""The HTTP API: conversations, client profiles and continuity, for a company's other systems.

Off by default; on its own listener. Every request needs a bearer token from the config,
compared in constant time, with the scope the document gives the operation (``x-scope``).
Requests are checked against docs/openapi.yaml before a handler runs (bridge.api.schema);
handlers call the same code as the bot's commands (bridge.operations, bridge.absences,
bridge.outreach), so the policy decides alike and the audit trail names ``api:<token>``.

Answers are JSON, errors included: 400 names the field, 401/403 say why, 404 for unknown ids,
413 over the body limit. A homeserver failure is a 502 that loses nothing; anything else
unexpected is a bug, logged with its traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web
from mautrix.api import Method, Path
from mautrix.errors import MatrixRequestError
from mautrix.types import Membership

from bridge.absences import AbsenceError, parse_until
from bridge.networks import network_names
from bridge.api.schema import ApiDocument, Operation, RequestInvalid
from bridge.integrations_config import ApiConfig, ApiToken
from bridge.networks.base import OutreachError
from bridge.operations import OperationError
from bridge.store import PortalRow
from bridge.store import profiles

if TYPE_CHECKING:
    from bridge.bridge import Bridge
    from bridge.metrics import Metrics

log = logging.getLogger("houseline.api")

_STATUS = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "denied": 403,
    "not_found": 404,
    "too_large": 413,
    "failed": 502,
}
_SCOPE_ORDER = {"read": 0, "write": 1, "admin": 2}


class ApiError(Exception):
    def __init__(self, code: str, message: str, *, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.rule = code, message, field, rule

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "field": self.field, "rule": self.rule}}
        return web.json_response(body, status=_STATUS.get(self.code, 400))


@dataclass
class Call:
    """One authenticated, validated request."""

    token: ApiToken
    params: dict[str, Any]

    @property
    def actor(self) -> str:
        return f"api:{self.token.name}"


Handler = Callable[[Call], Awaitable[tuple[int, Any]]]


class ApiServer:
    def __init__(self, config: ApiConfig, bridge: Bridge, *, metrics: Metrics | None = None) -> None:
        """``metrics``: serve GET /metrics here too (when it has no listener of its own)."""
        self.config = config
        self.bridge = bridge
        self.document = ApiDocument(networks=network_names())
        self.app = web.Application(client_max_size=config.max_body_bytes, middlewares=[self._errors])
        self._handlers: dict[str, Handler] = {
            "list_conversations": self.list_conversations,
            "get_conversation": self.get_conversation,
            "list_messages": self.list_messages,
            "assign": self.assign,
            "place_hold": self.place_hold,
            "release_hold": self.release_hold,
            "export_conversation": self.export_conversation,
            "get_profile": self.get_profile,
            "update_profile": self.update_profile,
            "offboard": self.offboard,
            "set_absence": self.set_absence,
            "end_absence": self.end_absence,
            "outreach_template": self.outreach_template,
            "outreach_link": self.outreach_link,
        }
        scopes = {
            op["operationId"]: op.get("x-scope", "admin")
            for item in self.document.doc["paths"].values()
            for op in item.values()
            if isinstance(op, dict) and "operationId" in op
        }
        for op in self.document.operations:
            self.app.router.add_route(
                op.method, self.document.base_path + op.path, self._endpoint(op, scopes[op.operation_id])
            )
        self.metrics = metrics
        if metrics is not None:
            self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.config.listen_host, self.config.listen_port).start()
        log.info(
            "event=api_listening host=%s port=%d operations=%d",
            self.config.listen_host,
            self.config.listen_port,
            len(self._handlers),
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # the request's way through

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return e.response()
        except web.HTTPRequestEntityTooLarge:
            return ApiError("too_large", f"the body is over {self.config.max_body_bytes} bytes").response()
        except web.HTTPNotFound:
            return ApiError("not_found", "no such endpoint").response()
        except web.HTTPMethodNotAllowed:
            return ApiError("method_not_allowed", "this endpoint does not take that method").response()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """GET /metrics on the API listener: an API token (any scope) or, when set, the
        scraper's own metrics.token (checked by the metrics handler)."""
        from bridge.metrics import CONTENT_TYPE, metrics_handler

        assert self.metrics is not None
        try:
            self.authenticate(request)
        except ApiError:
            if not self.metrics.token:
                raise
            return await metrics_handler(self.metrics)(request)
        return web.Response(body=await self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    def authenticate(self, request: web.Request) -> ApiToken:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError("unauthorized", "send Authorization: Bearer <token>")
        found = None
        for token in self.config.tokens:
            # Every token is compared, in constant time, so the answer's timing says nothing.
            if hmac.compare_digest(token.token.encode(), given.strip().encode()):
                found = token
        if found is None:
            raise ApiError("unauthorized", "unknown token")
        return found

    def _endpoint(self, op: Operation, scope: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            token = self.authenticate(request)
            if not any(_SCOPE_ORDER[s] >= _SCOPE_ORDER[scope] for s in token.scopes):
                raise ApiError(
                    "forbidden",
                    f"this needs the {scope} scope; the token has {', '.join(sorted(token.scopes))}",
                )
            raw = await request.read()
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise ApiError("invalid", "the body is not JSON", field="body") from None
            try:
                params = self.document.check(
                    op, dict(request.match_info), dict(request.query), body, bool(raw)
                )
            except RequestInvalid as e:
                raise ApiError("invalid", e.message, field=e.field) from None
            call = Call(token, params)
            try:
                status, answer = await self._handlers[op.operation_id](call)
            except OperationError as e:
                raise ApiError(e.kind, e.message, rule=e.rule) from None
            except MatrixRequestError as e:
                log.warning(
                    "event=api_homeserver_error operation=%s status=%s", op.operation_id, e.http_status
                )
                raise ApiError("failed", f"the homeserver answered {e.http_status}: {e.message}") from None
            if op.method != "GET":
                await self.bridge.audit.record(
                    actor=call.actor,
                    action=f"api.{op.operation_id}",
                    subject=request.path,
                    verdict="allow",
                    rule=f"api.scope.{scope}",
                )
            return web.json_response(answer, status=status)

        return endpoint

    # lookups

    async def _portal(self, room_id: str) -> PortalRow:
        portal = await self.bridge.portals.by_room(room_id)
        if portal is None:
            raise ApiError("not_found", f"{room_id} is not a client conversation", field="room_id")
        return portal

    async def _conversation(
        self, portal: PortalRow, waiting: dict[str, int], activity: dict[str, int]
    ) -> dict[str, Any]:
        return {
            "room_id": portal.room_id,
            "name": portal.name,
            "network": portal.network,
            "account": portal.account,
            "chat_id": portal.chat_id,
            "status": portal.status,
            "legal_hold": portal.legal_hold,
            "disclaimer_sent": portal.disclaimer_sent,
            "assignee": portal.assignee,
            "initiated_by": portal.initiated_by,
            "initiated_at": portal.initiated_at,
            "waiting_since": waiting.get(portal.room_id),
            "last_activity": activity.get(portal.room_id),
        }

    # conversations

    async def list_conversations(self, call: Call) -> tuple[int, Any]:
        p = call.params
        store = self.bridge.store
        waiting = {w.room_id: w.since_ms for w in await store.waiting()}
        activity = await profiles.last_activity(store.db)
        held = await profiles.rooms_held_for_senior(store.db) if p.get("status") == "held" else set()
        ghosts = self.bridge.policy_bot.ghosts
        out = []
        for portal in reversed(await store.all_portals()):
            if "client" in p and p["client"] not in (
                portal.chat_id,
                ghosts.user_id(portal.network, portal.chat_id),
            ):
                continue
            if "network" in p and portal.network != p["network"]:
                continue
            if "assignee" in p and portal.assignee != p["assignee"]:
                continue
            status = p.get("status")
            if status in ("active", "blocked", "disconnected") and portal.status != status:
                continue
            if (status == "waiting" and portal.room_id not in waiting) or (
                status == "held" and portal.room_id not in held
            ):
                continue
            if "since" in p and activity.get(portal.room_id, 0) < p["since"]:
                continue
            out.append(portal)
        start = int(p.get("cursor", 0))
        limit = p.get("limit", 50)
        page = out[start : start + limit]
        nxt = str(start + limit) if start + limit < len(out) else None
        return 200, {
            "conversations": [await self._conversation(x, waiting, activity) for x in page],
            "next": nxt,
        }

    async def get_conversation(self, call: Call) -> tuple[int, Any]:
        portal = await self._portal(call.params["room_id"])
        store = self.bridge.store
        waiting = {w.room_id: w.since_ms for w in await store.waiting()}
        data = await self._conversation(portal, waiting, await profiles.last_activity(store.db))
        members = await self.bridge.az.intent.get_room_members(
            portal.room_id, (Membership.JOIN, Membership.INVITE)
        )
        state = self.bridge.az.state_store
        data["members"] = [
            {"user_id": m, "membership": await _membership(state, portal.room_id, m), "kind": self._kind(m)}
            for m in sorted(members)
        ]
        return 200, data

    def _kind(self, user: str) -> str:
        pb = self.bridge.policy_bot
        if user == self.bridge.az.bot_mxid:
            return "bot"
        if pb.ghosts.is_ghost(user):
            return "client"
        if user in pb.policy.observers:
            return "observer"
        return "employee" if user.split(":", 1)[-1] == self.bridge.config.homeserver.domain else "external"

    async def list_messages(self, call: Call) -> tuple[int, Any]:
        portal = await self._portal(call.params["room_id"])
        query: dict[str, Any] = {"dir": "f", "limit": call.params.get("limit", 50)}
        if call.params.get("from"):
            query["from"] = call.params["from"]
        try:
            page = await self.bridge.az.intent.api.request(
                Method.GET, Path.v3.rooms[portal.room_id].messages, query_params=query
            )
        except MatrixRequestError as e:
            if e.http_status == 400:
                raise ApiError(
                    "invalid", "“from” is not a page token this conversation gave", field="from"
                ) from None
            raise
        events = []
        for event in page.get("chunk", []):
            links = await self.bridge.store.get_messages_by_event(event.get("event_id", ""))
            events.append({**event, "net.houseline.remote_ids": [link.remote_id for link in links]})
        nxt = page.get("end") if page.get("chunk") else None
        return 200, {"events": events, "next": nxt}

    async def assign(self, call: Call) -> tuple[int, Any]:
        portal = await self._portal(call.params["room_id"])
        user = call.params["body"]["user"]
        await self.bridge.commands.ops.assign(call.actor, portal, user)
        return 200, {"ok": True, "message": f"{user} looks after {portal.name} now."}

    async def place_hold(self, call: Call) -> tuple[int, Any]:
        portal = await self._portal(call.params["room_id"])
        await self.bridge.commands.ops.set_legal_hold(call.actor, portal, True)
        return 200, {"ok": True, "message": f"Legal hold on: {portal.name}."}

    async def release_hold(self, call: Call) -> tuple[int, Any]:
        portal = await self._portal(call.params["room_id"])
        await self.bridge.commands.ops.set_legal_hold(call.actor, portal, False)
        return 200, {"ok": True, "message": f"Legal hold off: {portal.name}."}

    async def export_conversation(self, call: Call) -> tuple[int, Any]:
        portal = await self._portal(call.params["room_id"])
        fmt = call.params["body"].get("format", "jsonl")
        where = await self.bridge.export_portal(portal, fmt, actor=call.actor)
        return 200, {"path": where, "format": fmt}

    # client profiles

    async def _profile_base(self, network: str, remote_id: str) -> profiles.ClientProfile:
        found = await profiles.get_profile(self.bridge.store.db, network, remote_id)
        if found is not None:
            return found
        name = await profiles.ghost_name(self.bridge.store.db, network, remote_id)
        if name is None:
            raise ApiError(
                "not_found", f"no {network} client {remote_id} has written to the company", field="remote_id"
            )
        return profiles.ClientProfile(network, remote_id, display_name=name)

    async def get_profile(self, call: Call) -> tuple[int, Any]:
        return 200, (await self._profile_base(call.params["network"], call.params["remote_id"])).as_json()

    async def update_profile(self, call: Call) -> tuple[int, Any]:
        base = await self._profile_base(call.params["network"], call.params["remote_id"])
        fresh = await profiles.update_profile(self.bridge.store.db, base, call.params["body"], call.actor)
        await self.bridge.audit.record(
            actor=call.actor,
            action="profile.update",
            subject=f"{fresh.network}:{fresh.remote_id}",
            verdict="allow",
            rule="api.scope.write",
            fields=sorted(call.params["body"]),
        )
        return 200, fresh.as_json()

    # continuity

    async def offboard(self, call: Call) -> tuple[int, Any]:
        body = call.params["body"]
        ops = self.bridge.commands.ops
        successors = await ops.successors_of(body["leaver"], body["to"])
        done = await ops.offboard(call.actor, body["leaver"], successors)
        return 200, {
            "ok": True,
            "message": f"handed {len(done.rooms)} conversation(s) to {', '.join(successors)}",
            "problems": list(done.problems),
        }

    async def set_absence(self, call: Call) -> tuple[int, Any]:
        body = call.params["body"]
        absences = self.bridge.absences
        if (
            not await self.bridge.commands.ops.user_exists(body["user"])
            and body["user"].split(":", 1)[-1] == self.bridge.config.homeserver.domain
        ):
            raise ApiError("not_found", f"There is no user {body['user']} on this homeserver.", field="user")
        hours = self.bridge.policy_bot.policy.sla.hours
        try:
            until = parse_until(body["until"], absences.clock.now(), hours.tz_name if hours else "UTC")
            covers = await absences.resolve_cover(body["user"], body.get("cover"))
        except AbsenceError as e:
            raise ApiError(
                "invalid",
                str(e),
                field="until" if "date" in str(e) or "past" in str(e) or "year" in str(e) else "cover",
            ) from None
        report = await absences.away(call.actor, body["user"], until, covers)
        return 200, {
            "ok": True,
            "message": f"{body['user']} is away; {report.rooms} conversation(s) covered",
            "problems": list(report.problems),
        }

    async def end_absence(self, call: Call) -> tuple[int, Any]:
        user = call.params["user_id"]
        if user not in await self.bridge.store.absences():
            raise ApiError("not_found", f"{user} is not recorded as away", field="user_id")
        rooms = await self.bridge.absences.back(call.actor, user)
        return 200, {"ok": True, "message": f"{user} is back; the cover left {rooms} conversation(s)"}

    async def outreach_template(self, call: Call) -> tuple[int, Any]:
        body = call.params["body"]
        try:
            started = await self.bridge.outreach.contact(
                body["on_behalf_of"],
                call.params["network"],
                body["number"],
                from_account=body.get("from"),
                template=body["template"],
                language=body.get("language", ""),
                params=tuple(body.get("params", ())),
            )
        except OutreachError as e:
            raise ApiError("denied" if e.rule else "invalid", e.reason, rule=e.rule) from None
        return 200, {"room_id": started.portal.room_id, "created": started.created}

    async def outreach_link(self, call: Call) -> tuple[int, Any]:
        try:
            link, expires = await self.bridge.outreach.invite_link(
                call.params["body"]["on_behalf_of"], call.params["network"]
            )
        except OutreachError as e:
            raise ApiError("denied" if e.rule else "invalid", e.reason, rule=e.rule) from None
        return 200, {"link": link, "expires_at": expires}


async def _membership(state: Any, room_id: str, user: str) -> str:
    member = await state.get_member(room_id, user)
    return str(member.membership.value) if member is not None and member.membership else "join"
