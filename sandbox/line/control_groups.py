"""The control API for group chats and multi-person chats (rooms): ``/groups`` (see
sandbox/line/README.md).

A group is created with its members and the account in it: the account gets a join event (a
room's join event waits for the room's next event, as LINE documents). Members post, join
(memberJoined, with a reply token), leave (memberLeft), unsend; a member can remove the account
(leave event) and invite it back (join event).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from . import ids
from .control import own_message
from .control_common import guard, json_response, long_poll, profile_fields, read_json
from .events import Events
from .inbound import client_sends, parse_content
from .state import Chat, ClientError, SandboxState, StoredMessage, User
from .views import message_view

log = logging.getLogger("sandbox.line.control")


class GroupControl:
    def __init__(self, state: SandboxState, events: Events) -> None:
        self.state = state
        self.events = events

    def add_routes(self, app: web.Application) -> None:
        routes = [
            ("POST", "/groups", self.create),
            ("GET", "/groups/{chat_id}", self.describe),
            ("POST", "/groups/{chat_id}/messages", self.post_message),
            ("GET", "/groups/{chat_id}/messages", self.get_messages),
            ("POST", "/groups/{chat_id}/members", self.join),
            ("DELETE", "/groups/{chat_id}/members/{user}", self.leave),
            ("POST", "/groups/{chat_id}/unsend/{message_id}", self.unsend),
            ("POST", "/groups/{chat_id}/remove-bot", self.remove_bot),
            ("POST", "/groups/{chat_id}/add-bot", self.add_bot),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, guard(handler))

    # ------------------------------------------------------------------ helpers

    def _member(self, spec: Any) -> User:
        if isinstance(spec, str):
            return self.state.user(spec)
        if isinstance(spec, dict) and isinstance(spec.get("user"), str):
            return self.state.user(spec["user"], profile_fields(spec))
        raise ClientError('a member is a user id or alias, or {"user", "displayName"?, "pictureUrl"?}')

    def _describe(self, chat: Chat) -> dict[str, Any]:
        key = "groupId" if chat.kind == "group" else "roomId"
        return {
            key: chat.chat_id,
            "chatId": chat.chat_id,
            "kind": chat.kind,
            "name": chat.name,
            "pictureUrl": chat.picture_url,
            "members": [self.state.users[m].member_profile() for m in chat.members],
            "botMember": chat.bot_member,
        }

    def _sender(self, chat: Chat, body: dict[str, Any]) -> User:
        key = body.get("from")
        if not isinstance(key, str):
            raise ClientError('"from" (the member who acts) is required')
        user = self.state.existing_user(key)
        if user.user_id not in chat.members:
            raise ClientError(f"{key!r} is not a member of this chat", 403)
        return user

    def _require_bot(self, chat: Chat) -> None:
        if not chat.bot_member:
            raise ClientError("the account is not in this chat (POST .../add-bot first)", 409)

    # ------------------------------------------------------------------ lifecycle

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        room = body.get("room", False)
        if not isinstance(room, bool):
            raise ClientError('"room" must be true or false')
        members = body.get("members")
        if not isinstance(members, list) or not members:
            raise ClientError('"members" must be a non-empty list')
        name = body.get("name")
        if room and name is not None:
            raise ClientError("multi-person chats (rooms) have no name")
        if name is not None and not isinstance(name, str):
            raise ClientError('"name" must be a string')
        picture = body.get("pictureUrl")
        if picture is not None and not isinstance(picture, str):
            raise ClientError('"pictureUrl" must be a string')
        users = [self._member(m) for m in members]
        chat_id = ids.room_id() if room else ids.group_id()
        chat = Chat(
            chat_id,
            "room" if room else "group",
            name=None if room else (name or "Group"),
            picture_url=picture,
            members=list(dict.fromkeys(u.user_id for u in users)),
        )
        self.state.chats[chat_id] = chat
        if room:
            chat.pending_join = True
        else:
            self.events.emit(chat, "join")
        log.info("event=group_created chat=%s kind=%s members=%d", chat_id, chat.kind, len(chat.members))
        return json_response(self._describe(chat))

    async def describe(self, request: web.Request) -> web.Response:
        return json_response(self._describe(self.state.group(request.match_info["chat_id"])))

    async def remove_bot(self, request: web.Request) -> web.Response:
        """A member removes the account: a leave event."""
        chat = self.state.group(request.match_info["chat_id"])
        self._require_bot(chat)
        chat.bot_member = False
        if chat.pending_join:
            chat.pending_join = False  # a room that never had an event: LINE sends nothing
        else:
            self.events.emit(chat, "leave")
        return json_response(self._describe(chat))

    async def add_bot(self, request: web.Request) -> web.Response:
        chat = self.state.group(request.match_info["chat_id"])
        if chat.bot_member:
            raise ClientError("the account is already in this chat", 409)
        chat.bot_member = True
        if chat.kind == "room":
            chat.pending_join = True
        else:
            self.events.emit(chat, "join")
        return json_response(self._describe(chat))

    # ------------------------------------------------------------------ members

    async def join(self, request: web.Request) -> web.Response:
        """Users join: one memberJoined event listing them (when the account is in the chat)."""
        chat = self.state.group(request.match_info["chat_id"])
        body = await read_json(request)
        specs = body.get("members", [body] if "user" in body else None)
        if not isinstance(specs, list) or not specs:
            raise ClientError('give "members": [...] or one member\'s "user"')
        users = [self._member(s) for s in specs]
        joined = [u for u in users if u.user_id not in chat.members]
        if not joined:
            raise ClientError("they are all members already", 409)
        chat.members.extend(u.user_id for u in joined)
        answer = self._describe(chat)
        if chat.bot_member:
            event = self.events.emit(
                chat,
                "memberJoined",
                joined={"members": [{"type": "user", "userId": u.user_id} for u in joined]},
            )
            answer["webhookEventId"] = event["webhookEventId"]
            answer["replyToken"] = event["replyToken"]
        return json_response(answer)

    async def leave(self, request: web.Request) -> web.Response:
        chat = self.state.group(request.match_info["chat_id"])
        user = self.state.existing_user(request.match_info["user"])
        if user.user_id not in chat.members:
            raise ClientError("not a member of this chat", 404)
        chat.members.remove(user.user_id)
        answer = self._describe(chat)
        if chat.bot_member:
            event = self.events.emit(
                chat, "memberLeft", left={"members": [{"type": "user", "userId": user.user_id}]}
            )
            answer["webhookEventId"] = event["webhookEventId"]
        return json_response(answer)

    # ------------------------------------------------------------------ messages

    async def post_message(self, request: web.Request) -> web.Response:
        chat = self.state.group(request.match_info["chat_id"])
        body = await read_json(request)
        user = self._sender(chat, body)
        self._require_bot(chat)
        items = parse_content(self.state, body)
        sent = client_sends(self.state, self.events, chat, user, items, body.get("quote"))
        answer: dict[str, Any] = {"chatId": chat.chat_id, "userId": user.user_id, **sent[0]}
        if len(sent) > 1:
            answer["messages"] = sent
        return json_response(answer)

    async def get_messages(self, request: web.Request) -> web.Response:
        chat = self.state.group(request.match_info["chat_id"])
        after = request.query.get("after") or None

        def newer() -> list[StoredMessage]:
            return [m for m in chat.after(after) if m.delivered]

        messages = await long_poll(self.state.changes, request, newer)
        return json_response({"chatId": chat.chat_id, "messages": [message_view(m) for m in messages]})

    async def unsend(self, request: web.Request) -> web.Response:
        chat = self.state.group(request.match_info["chat_id"])
        body = await read_json(request)
        user = self._sender(chat, body)
        message = own_message(self.state, chat.chat_id, user.user_id, request.match_info["message_id"])
        answer: dict[str, Any] = {"messageId": message.id}
        if chat.bot_member:
            event = self.events.emit(chat, "unsend", user.user_id, unsend={"messageId": message.id})
            answer["webhookEventId"] = event["webhookEventId"]
        return json_response(answer)
