"""Users, chats and content: profile, followers, bot info, group and multi-person chat
endpoints, and Get content (``api-data.line.me``, served on the same base URL here).

Shapes are line-openapi's ``UserProfileResponse``, ``GetFollowersResponse``,
``BotInfoResponse``, ``GroupSummaryResponse``, ``GroupUserProfileResponse``/
``RoomUserProfileResponse``, ``GroupMemberCountResponse``, ``MembersIdsResponse`` and
``GetMessageContentTranscodingResponse``. Errors are the reference's: an id of the wrong shape
answers 400 ``The value for the 'groupId' parameter is invalid``; a profile LINE may not give
(not a friend and never messaged, or blocked), a chat the account is not in, or a member not in
it, answers 404 ``Not found``; content answers 404 ``not found`` once gone and 410 ``The content
is gone`` once the user unsent the message.
"""

from __future__ import annotations

import base64
import logging
import re

from aiohttp import web

from .api import BotApiRouter, line_json
from .errors import CONTENT_GONE, CONTENT_NOT_FOUND, LineError, invalid_parameter, not_found
from .events import Events
from .ids import GROUP_ID, ROOM_ID, USER_ID
from .state import Chat, SandboxState, StoredMessage

log = logging.getLogger("sandbox.line.api")

MEMBER_PAGE = 100  # "Max: 100 user IDs"
FOLLOWERS_DEFAULT, FOLLOWERS_MAX = 300, 1000
CONTENT_TYPES = ("image", "video", "audio", "file")


def encode_start(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def decode_start(start: str | None) -> int:
    if start is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(start + "=" * (-len(start) % 4)).decode()
        found = re.fullmatch(r"offset:(\d+)", text)
    except (ValueError, UnicodeDecodeError):
        found = None
    if found is None:
        raise LineError(400, "Invalid start param")
    return int(found.group(1))


class ChatsApi:
    def __init__(self, state: SandboxState, events: Events, content_retention: float | None) -> None:
        self.state = state
        self.events = events
        self.content_retention = content_retention

    def add_routes(self, app: web.Application, router: BotApiRouter) -> None:
        router.add(app, "GET", "/v2/bot/profile/{userId}", self.profile)
        router.add(app, "GET", "/v2/bot/followers/ids", self.followers)
        router.add(app, "GET", "/v2/bot/info", self.bot_info)
        router.add(app, "GET", "/v2/bot/group/{groupId}/summary", self.group_summary)
        for kind, key in (("group", "groupId"), ("room", "roomId")):
            router.add(app, "GET", f"/v2/bot/{kind}/{{{key}}}/members/count", self.member_count)
            router.add(app, "GET", f"/v2/bot/{kind}/{{{key}}}/members/ids", self.member_ids)
            router.add(app, "GET", f"/v2/bot/{kind}/{{{key}}}/member/{{userId}}", self.member_profile)
            router.add(app, "POST", f"/v2/bot/{kind}/{{{key}}}/leave", self.leave)
        router.add(app, "GET", "/v2/bot/message/{messageId}/content", self.content)
        router.add(app, "GET", "/v2/bot/message/{messageId}/content/preview", self.preview)
        router.add(app, "GET", "/v2/bot/message/{messageId}/content/transcoding", self.transcoding)

    # ------------------------------------------------------------------ users and the bot

    async def profile(self, request: web.Request, request_id: str) -> web.Response:
        user_id = request.match_info["userId"]
        if not USER_ID.fullmatch(user_id):
            raise invalid_parameter("userId")  # guess: wording modelled on groupId's
        user = self.state.users.get(user_id)
        if user is None or not self.state.profile_visible(user):
            raise not_found()
        return line_json(user.profile())

    async def followers(self, request: web.Request, request_id: str) -> web.Response:
        try:
            limit = int(request.query.get("limit", FOLLOWERS_DEFAULT))
        except ValueError:
            raise invalid_parameter("limit") from None
        if not 1 <= limit <= FOLLOWERS_MAX:
            raise invalid_parameter("limit")  # guess: wording
        offset = decode_start(request.query.get("start"))
        friends = [u.user_id for u in self.state.users.values() if u.relation == "friend"]
        body: dict[str, object] = {"userIds": friends[offset : offset + limit]}
        if offset + limit < len(friends):
            body["next"] = encode_start(offset + limit)
        return line_json(body)

    async def bot_info(self, request: web.Request, request_id: str) -> web.Response:
        bot = self.state.bot
        body: dict[str, object] = {
            "userId": bot.user_id,
            "basicId": bot.basic_id,
            "displayName": bot.display_name,
        }
        if bot.picture_url:
            body["pictureUrl"] = bot.picture_url
        body["chatMode"] = bot.chat_mode
        body["markAsReadMode"] = bot.mark_as_read_mode
        return line_json(body)

    # ------------------------------------------------------------------ groups and rooms

    def _chat(self, request: web.Request, *, must_be_member: bool = True) -> Chat:
        if "groupId" in request.match_info:
            key, pattern, kind = "groupId", GROUP_ID, "group"
        else:
            key, pattern, kind = "roomId", ROOM_ID, "room"
        chat_id = request.match_info[key]
        if not pattern.fullmatch(chat_id):
            raise invalid_parameter(key)
        chat = self.state.chats.get(chat_id)
        if chat is None or chat.kind != kind or (must_be_member and not chat.bot_member):
            raise not_found()
        return chat

    async def group_summary(self, request: web.Request, request_id: str) -> web.Response:
        chat = self._chat(request)
        body: dict[str, object] = {"groupId": chat.chat_id, "groupName": chat.name or ""}
        if chat.picture_url:
            body["pictureUrl"] = chat.picture_url
        return line_json(body)

    async def member_count(self, request: web.Request, request_id: str) -> web.Response:
        return line_json({"count": len(self._chat(request).members)})  # "excludes the LINE Official Account"

    async def member_ids(self, request: web.Request, request_id: str) -> web.Response:
        chat = self._chat(request)
        offset = decode_start(request.query.get("start"))
        body: dict[str, object] = {"memberIds": chat.members[offset : offset + MEMBER_PAGE]}
        if offset + MEMBER_PAGE < len(chat.members):
            body["next"] = encode_start(offset + MEMBER_PAGE)
        return line_json(body)

    async def member_profile(self, request: web.Request, request_id: str) -> web.Response:
        chat = self._chat(request)
        user_id = request.match_info["userId"]
        if not USER_ID.fullmatch(user_id):
            raise invalid_parameter("userId")
        user = self.state.users.get(user_id)
        if user is None or user_id not in chat.members:
            raise not_found()
        return line_json(user.member_profile())

    async def leave(self, request: web.Request, request_id: str) -> web.Response:
        """The account leaves: a leave event follows ("when your LINE Official Account leaves").
        Leaving a room it is not in answers 200, as documented; a group, 404."""
        is_room = "roomId" in request.match_info
        chat = self._chat(request, must_be_member=not is_room)
        if chat.bot_member:
            chat.bot_member = False
            chat.pending_join = False
            self.events.emit(chat, "leave")
            self.state.changes.notify()
            log.info("event=bot_left chat=%s", chat.chat_id)
        return line_json({})

    # ------------------------------------------------------------------ content

    def _content_message(self, request: web.Request) -> StoredMessage:
        message = self.state.messages.get(request.match_info["messageId"])
        if (
            message is None
            or message.from_account
            or message.type not in CONTENT_TYPES
            or message.data is None
        ):
            raise not_found(CONTENT_NOT_FOUND)
        if message.unsent:
            raise LineError(410, CONTENT_GONE)
        expired = (
            self.content_retention is not None
            and self.state.now() - message.timestamp / 1000 > self.content_retention
        )
        if message.content_deleted or expired:
            raise not_found(CONTENT_NOT_FOUND)
        return message

    async def content(self, request: web.Request, request_id: str) -> web.Response:
        message = self._content_message(request)
        assert message.data is not None
        log.info("event=content_download message_id=%s size=%d", message.id, len(message.data))
        return web.Response(body=message.data, content_type=message.mime_type or "application/octet-stream")

    async def preview(self, request: web.Request, request_id: str) -> web.Response:
        """Images and videos only. Simplified: an image's preview is the image itself; a video's
        is the preview the client sent with it (404 without one)."""
        message = self._content_message(request)
        if message.type == "image" and message.data is not None:
            return web.Response(body=message.data, content_type=message.mime_type or "image/jpeg")
        if message.type == "video" and message.preview is not None:
            return web.Response(body=message.preview, content_type="image/jpeg")
        raise not_found(CONTENT_NOT_FOUND)

    async def transcoding(self, request: web.Request, request_id: str) -> web.Response:
        """Content is ready at once here ("succeeded"); LINE may answer "processing" for a
        while for large videos and audio."""
        self._content_message(request)
        return line_json({"status": "succeeded"})
