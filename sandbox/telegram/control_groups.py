"""Control endpoints for groups: create one with the bot in it, let members write, join, leave,
edit and react, promote the bot, and upgrade the group to a supergroup.

Routes live under ``/groups``; see sandbox/telegram/README.md.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import content
from .control_common import (
    ControlBase,
    chat_action,
    json_response,
    path_int,
    sent_answer,
)
from .groups import GroupWorld
from .state import ClientError, GroupChat, SandboxState, StoredMessage
from .views import message_view


class GroupControl(ControlBase):
    def __init__(self, state: SandboxState) -> None:
        super().__init__(state)
        self.world = GroupWorld(state)

    def add_routes(self, app: web.Application) -> None:
        route = app.router
        group = "/groups/{chat_id}"
        route.add_post("/groups", self._guard(self.create))
        route.add_get(group, self._guard(self.get_group))
        route.add_post(f"{group}/messages", self._guard(self.post_message))
        route.add_get(f"{group}/messages", self._guard(self.get_messages))
        route.add_get(f"{group}/files/{{file_id}}", self._guard(self.get_file))
        route.add_post(f"{group}/messages/{{message_id}}/edit", self._guard(self.edit))
        route.add_post(f"{group}/messages/{{message_id}}/react", self._guard(self.react))
        route.add_post(f"{group}/messages/{{message_id}}/delete", self._guard(self.delete))
        route.add_post(f"{group}/members", self._guard(self.add_member))
        route.add_delete(f"{group}/members/{{user_id}}", self._guard(self.remove_member))
        route.add_post(f"{group}/bot", self._guard(self.set_bot))
        route.add_post(f"{group}/migrate", self._guard(self.migrate))

    def _group(self, request: web.Request, *, writable: bool = True) -> GroupChat:
        return self.world.group(path_int(request, "chat_id"), writable=writable)

    @staticmethod
    def _describe(group: GroupChat) -> dict[str, Any]:
        return {
            "chat_id": group.chat_id,
            "chat": group.as_chat(),
            "members": [member.as_user() for member in group.members.values()],
            "bot_status": group.bot_status,
            "migrated_to_chat_id": group.migrated_to,
        }

    def _message(self, group: GroupChat, request: web.Request) -> StoredMessage:
        stored = group.find(path_int(request, "message_id"))
        if stored is None:
            raise ClientError("no such message in this group", status=404)
        return stored

    # ------------------------------------------------------------------ the group

    async def create(self, request: web.Request) -> web.Response:
        group = self.world.create(await self._body(request))
        return json_response(self._describe(group))

    async def get_group(self, request: web.Request) -> web.Response:
        return json_response(self._describe(self._group(request, writable=False)))

    async def add_member(self, request: web.Request) -> web.Response:
        group = self._group(request)
        message = self.world.add_member(group, await self._body(request))
        return json_response({**self._describe(group), "message_id": message["message_id"]})

    async def remove_member(self, request: web.Request) -> web.Response:
        group = self._group(request)
        by = request.query.get("by")
        try:
            by_id = int(by) if by is not None else None
        except ValueError:
            raise ClientError('"by" must be a user id') from None
        message = self.world.remove_member(group, path_int(request, "user_id"), by_id)
        answer = self._describe(group)
        if message is not None:
            answer["message_id"] = message["message_id"]
        return json_response(answer)

    async def set_bot(self, request: web.Request) -> web.Response:
        """``{"status": "administrator"|"member", "by": id?}``: promote or demote the bot."""
        group = self._group(request)
        body = await self._body(request)
        self.world.set_bot_status(group, body.get("status"), body.get("by"))
        return json_response(self._describe(group))

    async def migrate(self, request: web.Request) -> web.Response:
        group = self._group(request)
        body = await self._body(request)
        supergroup = self.world.migrate(group, body.get("by"))
        return json_response(self._describe(supergroup))

    # ------------------------------------------------------------------ members' phones

    async def post_message(self, request: web.Request) -> web.Response:
        """``{"from": id, "text"|"location"|"contact", ...}`` or a multipart file with a
        ``from`` field; the bot gets it as ``message`` if privacy mode lets it through."""
        group = self._group(request)
        body = await content.read_body(request)
        sender = self.world.member(group, body.get_int("from"))
        reply_to_id = content.reply_to_id(body)
        reply_to = group.find(reply_to_id) if reply_to_id is not None else None
        if reply_to_id is not None and reply_to is None:
            raise ClientError("reply_to_message_id is not a message of this group")
        fields = content.message_content(self.state, body)
        message = self.world.member_writes(group, sender, fields, reply_to)
        answer = sent_answer(message)
        stored = group.messages[message["message_id"]]
        answer["delivered_to_bot"] = group.bot_present and self.world.bot_sees(group, stored)
        return json_response(answer)

    async def get_messages(self, request: web.Request) -> web.Response:
        """Everything in the group, oldest first, with ``from`` and ``sender``."""
        group_id = path_int(request, "chat_id")
        self.world.group(group_id, writable=False)
        after, timeout = self._after_timeout(request)

        def newer() -> list[StoredMessage]:
            return list(self.state.groups[group_id].after(after))

        await self._wait(newer, timeout)
        return json_response(
            {
                "messages": [message_view(m, with_sender=True, with_from=True) for m in newer()],
                "chat_action": chat_action(self.state.groups[group_id]),
            }
        )

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        return self._file_response(self._group(request, writable=False), request.match_info["file_id"])

    async def edit(self, request: web.Request) -> web.Response:
        group = self._group(request)
        stored = self._message(group, request)
        body = await self._body(request)
        sender = self.world.member(group, body.get("from"))
        if stored.sender != "member" or stored.data["from"]["id"] != sender.id:
            raise ClientError("members can edit only their own messages", status=403)
        edited = self.state.user_edits(stored, body)
        self.world.edited(group, stored)
        return json_response({"message_id": stored.message_id, "edit_date": edited["edit_date"]})

    async def react(self, request: web.Request) -> web.Response:
        group = self._group(request)
        stored = self._message(group, request)
        body = await self._body(request)
        sender = self.world.member(group, body.get("from"))
        changed = self.state.user_reacts(stored, sender.id, body.get("emoji"))
        if changed is not None:
            self.world.reacted(group, stored, sender, *changed)
        return json_response({"message_id": stored.message_id, "changed": changed is not None})

    async def delete(self, request: web.Request) -> web.Response:
        """A member deletes their own message (no update reaches bots)."""
        group = self._group(request)
        stored = self._message(group, request)
        body = await self._body(request)
        sender = self.world.member(group, body.get("from"))
        if stored.data.get("from", {}).get("id") != sender.id and sender.id != group.creator_id:
            raise ClientError("only the author or the group's creator can delete it", status=403)
        stored.deleted = True
        self.state.outbox.notify()
        return json_response({"message_id": stored.message_id, "deleted": True})
