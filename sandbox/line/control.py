"""The control API for clients' phones: ``/client/{user}`` (see sandbox/line/README.md).

``{user}`` is a LINE user id (``U`` + 32 hex digits) or an alias (``alice``) that the sandbox
turns into a stable LINE-shaped id; answers always give the ``userId``. A user may message the
account without adding it, as on LINE; adding (``follow``) and blocking (``unfollow``) change
what pushes, profiles and loading animations do.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .control_common import guard, json_response, long_poll, profile_fields, read_json
from .events import Events
from .inbound import client_sends, parse_content
from .state import UNSEND_WINDOW, ClientError, SandboxState, StoredMessage, User
from .views import loading_view, message_view

log = logging.getLogger("sandbox.line.control")


class ClientControl:
    def __init__(self, state: SandboxState, events: Events) -> None:
        self.state = state
        self.events = events

    def add_routes(self, app: web.Application) -> None:
        routes = [
            ("GET", "/client/{user}", self.describe),
            ("POST", "/client/{user}/follow", self.follow),
            ("POST", "/client/{user}/unfollow", self.unfollow),
            ("POST", "/client/{user}/messages", self.post_message),
            ("GET", "/client/{user}/messages", self.get_messages),
            ("GET", "/client/{user}/history", self.get_history),
            ("POST", "/client/{user}/unsend/{message_id}", self.unsend),
            ("POST", "/client/{user}/chat-screen", self.chat_screen),
            ("GET", "/client/{user}/media/{message_id}/{role}", self.media),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, guard(handler))

    def _describe(self, user: User) -> dict[str, Any]:
        chat = self.state.chats.get(user.user_id)
        return {
            "userId": user.user_id,
            "alias": user.alias,
            "profile": user.profile(),
            "relation": user.relation,
            "canPush": self.state.can_push(user),
            "chatScreenOpen": user.screen_open,
            "loading": loading_view(chat, self.state.now()),
        }

    async def describe(self, request: web.Request) -> web.Response:
        return json_response(self._describe(self.state.existing_user(request.match_info["user"])))

    # ------------------------------------------------------------------ friendship

    async def follow(self, request: web.Request) -> web.Response:
        """Add the account as a friend (or unblock it): a follow event with a reply token."""
        body = await read_json(request)
        user = self.state.user(request.match_info["user"], profile_fields(body))
        if user.relation == "friend":
            raise ClientError("already a friend of the account", 409)
        unblocked = user.relation == "blocked"
        user.relation = "friend"
        event = self.events.emit(self.state.user_chat(user), "follow", follow={"isUnblocked": unblocked})
        log.info("event=client_follow user_id=%s unblocked=%s", user.user_id, unblocked)
        return json_response(
            {
                "userId": user.user_id,
                "isUnblocked": unblocked,
                "webhookEventId": event["webhookEventId"],
                "replyToken": event["replyToken"],
            }
        )

    async def unfollow(self, request: web.Request) -> web.Response:
        """Block the account: an unfollow event (no reply token)."""
        user = self.state.existing_user(request.match_info["user"])
        if user.relation != "friend":
            raise ClientError("only a friend can block the account", 409)
        user.relation = "blocked"
        event = self.events.emit(self.state.user_chat(user), "unfollow")
        log.info("event=client_unfollow user_id=%s", user.user_id)
        return json_response({"userId": user.user_id, "webhookEventId": event["webhookEventId"]})

    async def chat_screen(self, request: web.Request) -> web.Response:
        """Whether the chat with the account is on the phone's screen (loading animations only
        show then)."""
        body = await read_json(request)
        user = self.state.existing_user(request.match_info["user"])
        if not isinstance(body.get("open"), bool):
            raise ClientError('"open" must be true or false')
        user.screen_open = body["open"]
        return json_response(self._describe(user))

    # ------------------------------------------------------------------ messages

    async def post_message(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        user = self.state.user(request.match_info["user"], profile_fields(body))
        if user.relation == "blocked":
            raise ClientError(
                "this user blocked the account; POST /client/{user}/follow to unblock it first", 403
            )
        items = parse_content(self.state, body)
        sent = client_sends(
            self.state, self.events, self.state.user_chat(user), user, items, body.get("quote")
        )
        log.info("event=client_message user_id=%s type=%s count=%d", user.user_id, items[0].type, len(sent))
        answer: dict[str, Any] = {"userId": user.user_id, **sent[0]}
        if len(sent) > 1:
            answer["messages"] = sent
        return json_response(answer)

    def _chat_messages(self, request: web.Request, *, both: bool) -> list[StoredMessage]:
        user_id = self.state.resolve_user(request.match_info["user"])
        chat = self.state.chats.get(user_id)
        if chat is None:
            return []
        after = request.query.get("after") or None
        return [
            m for m in chat.after(after) if (m.from_account and m.delivered) or (both and not m.from_account)
        ]

    async def get_messages(self, request: web.Request) -> web.Response:
        """What the client received from the account, oldest first; ``?after=<id or seq>``,
        ``?timeout=<s>`` waits for a newer one whose media fetches have finished."""
        messages = await long_poll(
            self.state.changes, request, lambda: self._chat_messages(request, both=False)
        )
        return json_response(self._chat_answer(request, messages))

    async def get_history(self, request: web.Request) -> web.Response:
        messages = await long_poll(
            self.state.changes, request, lambda: self._chat_messages(request, both=True)
        )
        return json_response(self._chat_answer(request, messages))

    def _chat_answer(self, request: web.Request, messages: list[StoredMessage]) -> dict[str, Any]:
        user_id = self.state.resolve_user(request.match_info["user"])
        user = self.state.users.get(user_id)
        return {
            "userId": user_id,
            "relation": user.relation if user else "none",
            "messages": [message_view(m) for m in messages],
            "loading": loading_view(self.state.chats.get(user_id), self.state.now()),
        }

    async def unsend(self, request: web.Request) -> web.Response:
        user = self.state.existing_user(request.match_info["user"])
        chat = self.state.user_chat(user)
        message = own_message(self.state, chat.chat_id, user.user_id, request.match_info["message_id"])
        event = self.events.emit(chat, "unsend", user.user_id, unsend={"messageId": message.id})
        return json_response({"messageId": message.id, "webhookEventId": event["webhookEventId"]})

    async def media(self, request: web.Request) -> web.Response:
        """The bytes the client's app fetched for a media message of the account."""
        user_id = self.state.resolve_user(request.match_info["user"])
        message = self.state.messages.get(request.match_info["message_id"])
        if message is None or message.chat_id != user_id or not message.from_account:
            raise ClientError("no such message from the account in this chat", 404)
        record = next((m for m in message.media if m.role == request.match_info["role"]), None)
        if record is None or record.data is None:
            raise ClientError("nothing was fetched for that URL", 404)
        content_type = (record.content_type or "application/octet-stream").split(";")[0]
        return web.Response(body=record.data, content_type=content_type)


def own_message(state: SandboxState, chat_id: str, user_id: str, message_id: str) -> StoredMessage:
    """A message ``user_id`` sent in ``chat_id`` that can still be unsent; it is marked unsent."""
    message = state.messages.get(message_id)
    if message is None or message.chat_id != chat_id:
        raise ClientError("no such message in this chat", 404)
    if message.sender != user_id:
        raise ClientError("users can only unsend their own messages", 403)
    if message.unsent:
        raise ClientError("already unsent", 409)
    if state.now() - message.timestamp / 1000 > UNSEND_WINDOW:
        raise ClientError("messages can only be unsent within 24 hours of sending", 409)
    message.unsent = True
    state.changes.notify()
    return message
