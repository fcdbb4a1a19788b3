"""Groups and supergroups the bot is in, from their members' side: creating a group with the bot,
members writing, joining and leaving, and the upgrade of a basic group to a supergroup.

Delivery follows the documented privacy mode: unless the bot is an administrator or has privacy
mode off (``can_read_all_group_messages``), it receives only commands, messages that mention it,
replies to its own messages and service messages. ``chat_member`` and ``message_reaction``
updates need an administrator bot (and the bot's allowed_updates listing them).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from .state import (
    ClientError,
    ClientProfile,
    GroupChat,
    SandboxState,
    StoredMessage,
    without_reply,
)

log = logging.getLogger("sandbox.telegram.groups")

MAX_TITLE_LENGTH = 128
BOT_STATUSES = ("member", "administrator")


def new_group_id(supergroup: bool) -> int:
    """Basic groups have ids like -4xxxxxxxxx, supergroups -100 followed by the channel id."""
    if supergroup:
        return -(10**12 + 1_000_000_000 + secrets.randbelow(8_999_999_999))
    return -(4_000_000_000 + secrets.randbelow(999_999_999))


class GroupWorld:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    # ------------------------------------------------------------------ lookups

    def group(self, chat_id: int, *, writable: bool = True) -> GroupChat:
        group = self.state.groups.get(chat_id)
        if group is None:
            raise ClientError("no such group", status=404)
        if writable and group.migrated_to is not None:
            raise ClientError(f"this group was upgraded to the supergroup {group.migrated_to}", status=409)
        return group

    @staticmethod
    def member(group: GroupChat, user_id: Any) -> ClientProfile:
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            raise ClientError('"from" must be the user id of a group member')
        profile = group.members.get(user_id)
        if profile is None:
            raise ClientError(f"user {user_id} is not a member of this group", status=403)
        return profile

    def _profile(self, raw: Any) -> ClientProfile:
        if not isinstance(raw, dict):
            raise ClientError('members must be objects like {"id": 1, "first_name": "..."}')
        user_id = raw.get("id")
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            raise ClientError('a member needs an integer "id"')
        if user_id == self.state.bot.id:
            raise ClientError("the bot is added to the group automatically")
        return self.state.profile_from(user_id, raw, self.state.known_profile(user_id))

    # ------------------------------------------------------------------ the group's life

    def create(self, body: dict[str, Any]) -> GroupChat:
        """Someone creates a group with the bot in it: ``my_chat_member`` (left -> member or
        administrator), then the service message (``group_chat_created`` for a basic group,
        ``new_chat_members`` with the bot for a supergroup)."""
        title = body.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE_LENGTH:
            raise ClientError('"title" is required: 1-128 characters')
        raw_members = body.get("members")
        if not isinstance(raw_members, list) or not raw_members:
            raise ClientError('"members" must list at least the creator')
        members = [self._profile(raw) for raw in raw_members]
        supergroup = body.get("supergroup", False)
        if not isinstance(supergroup, bool):
            raise ClientError('"supergroup" must be true or false')
        bot_status = body.get("bot_status", "member")
        if bot_status not in BOT_STATUSES:
            raise ClientError('"bot_status" must be "member" or "administrator"')
        creator_id = body.get("creator_id", members[0].id)
        if creator_id not in {m.id for m in members}:
            raise ClientError('"creator_id" must be one of the members')
        group = GroupChat(
            chat_id=new_group_id(supergroup),
            title=title.strip(),
            type="supergroup" if supergroup else "group",
            members={m.id: m for m in members},
            creator_id=creator_id,
            bot_status="left",
        )
        self.state.groups[group.chat_id] = group
        creator = group.members[creator_id]
        self._set_bot_status(group, bot_status, creator)
        if supergroup:
            self.service(group, creator, {"new_chat_members": [self.state.bot.as_user()]})
        else:
            self.service(group, creator, {"group_chat_created": True})
        log.info("event=group_created chat_id=%d type=%s", group.chat_id, group.type)
        return group

    def _set_bot_status(self, group: GroupChat, status: str, by: ClientProfile) -> None:
        old = group.bot_status
        group.bot_status = status  # type: ignore[assignment]
        old_member = self.state.bot_member(old)
        new_member = self.state.bot_member(status)
        if status == "kicked":
            new_member["until_date"] = 0
        self.state.push_update(
            "my_chat_member",
            {
                "chat": group.as_chat(),
                "from": by.as_user(),
                "date": self.state.now(),
                "old_chat_member": old_member,
                "new_chat_member": new_member,
            },
        )

    def set_bot_status(self, group: GroupChat, status: Any, by_id: Any) -> None:
        """An administrator promotes or demotes the bot (``my_chat_member``)."""
        if status not in BOT_STATUSES:
            raise ClientError('"status" must be "member" or "administrator"')
        if not group.bot_present:
            raise ClientError("the bot is not in this group; add it as a member", status=409)
        by = self.member(group, by_id if by_id is not None else group.creator_id)
        if group.bot_status != status:
            self._set_bot_status(group, status, by)

    def add_member(self, group: GroupChat, raw: dict[str, Any]) -> dict[str, Any]:
        """Someone joins (or is added by ``added_by``): ``new_chat_members`` and, for an
        administrator bot, ``chat_member``. Adding the bot's id puts the bot back in."""
        added_by_id = raw.get("added_by")
        if raw.get("id") == self.state.bot.id:
            if group.bot_present:
                raise ClientError("the bot is already in this group", status=409)
            by = self.member(group, added_by_id if added_by_id is not None else group.creator_id)
            self._set_bot_status(group, "member", by)
            return self.service(group, by, {"new_chat_members": [self.state.bot.as_user()]})
        profile = self._profile(raw)
        if profile.id in group.members:
            raise ClientError("already a member", status=409)
        by = self.member(group, added_by_id) if added_by_id is not None else profile
        group.members[profile.id] = profile
        message = self.service(group, by, {"new_chat_members": [profile.as_user()]})
        self._chat_member(group, by, profile, "left", "member")
        return message

    def remove_member(self, group: GroupChat, user_id: int, by_id: int | None) -> dict[str, Any] | None:
        """Someone leaves (or is removed by ``by_id``): ``left_chat_member`` and, for an
        administrator bot, ``chat_member``. Removing the bot: only ``my_chat_member``."""
        if user_id == self.state.bot.id:
            if not group.bot_present:
                raise ClientError("the bot is not in this group", status=409)
            by = self.member(group, by_id if by_id is not None else group.creator_id)
            self._set_bot_status(group, "kicked" if group.type == "supergroup" else "left", by)
            return None
        profile = self.member(group, user_id)
        by = self.member(group, by_id) if by_id is not None else profile
        was_admin_bot = group.bot_status == "administrator"
        message = self.service(group, by, {"left_chat_member": profile.as_user()})
        del group.members[user_id]
        new_status = "kicked" if by is not profile else "left"
        if was_admin_bot:
            self._chat_member(group, by, profile, "member", new_status)
        return message

    def _chat_member(
        self, group: GroupChat, by: ClientProfile, user: ClientProfile, old: str, new: str
    ) -> None:
        """``chat_member``: "The bot must be an administrator in the chat"."""
        if group.bot_status != "administrator":
            return
        new_member: dict[str, Any] = {"user": user.as_user(), "status": new}
        if new == "kicked":
            new_member["until_date"] = 0
        self.state.push_update(
            "chat_member",
            {
                "chat": group.as_chat(),
                "from": by.as_user(),
                "date": self.state.now(),
                "old_chat_member": {"user": user.as_user(), "status": old},
                "new_chat_member": new_member,
            },
        )

    def migrate(self, group: GroupChat, by_id: Any) -> GroupChat:
        """Upgrade a basic group to a supergroup, as Telegram does it: the old group gets a
        service message with ``migrate_to_chat_id``, the new supergroup (new -100... id, message
        ids from 1) one with ``migrate_from_chat_id``; the old id then answers 400 with
        ``parameters.migrate_to_chat_id``."""
        if group.type != "group":
            raise ClientError("only basic groups can be upgraded", status=409)
        by = self.member(group, by_id if by_id is not None else group.creator_id)
        supergroup = GroupChat(
            chat_id=new_group_id(True),
            title=group.title,
            type="supergroup",
            members=dict(group.members),
            creator_id=group.creator_id,
            bot_status=group.bot_status,
        )
        self.state.groups[supergroup.chat_id] = supergroup
        self.service(group, by, {"migrate_to_chat_id": supergroup.chat_id})
        group.migrated_to = supergroup.chat_id
        self.service(supergroup, by, {"migrate_from_chat_id": group.chat_id})
        log.info("event=group_migrated from=%d to=%d", group.chat_id, supergroup.chat_id)
        return supergroup

    # ------------------------------------------------------------------ messages

    def service(self, group: GroupChat, by: ClientProfile, fields: dict[str, Any]) -> dict[str, Any]:
        message = self._message(group, by, fields, None)
        stored = group.add(message, "service")
        self._deliver(group, stored, "message")
        return message

    def member_writes(
        self,
        group: GroupChat,
        sender: ClientProfile,
        content: dict[str, Any],
        reply_to: StoredMessage | None,
    ) -> dict[str, Any]:
        message = self._message(group, sender, content, reply_to)
        stored = group.add(message, "member")
        self._deliver(group, stored, "message")
        return message

    def _message(
        self,
        group: GroupChat,
        sender: ClientProfile,
        fields: dict[str, Any],
        reply_to: StoredMessage | None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": group.allocate_message_id(),
            "from": sender.as_user(),
            "chat": group.as_chat(),
            "date": self.state.now(),
        }
        if reply_to is not None:
            message["reply_to_message"] = without_reply(reply_to.data)
        message.update(fields)
        return message

    def _deliver(self, group: GroupChat, stored: StoredMessage, kind: str) -> None:
        if group.bot_present and self.bot_sees(group, stored):
            self.state.push_update(kind, stored.data)
        self.state.outbox.notify()

    def edited(self, group: GroupChat, stored: StoredMessage) -> None:
        self._deliver(group, stored, "edited_message")

    def bot_sees(self, group: GroupChat, stored: StoredMessage) -> bool:
        """Privacy mode, as documented for bots that are not administrators."""
        if group.bot_status == "administrator" or self.state.bot.can_read_all_group_messages:
            return True
        data = stored.data
        if stored.sender == "service":
            return True
        text = data.get("text", data.get("caption", ""))
        if text.startswith("/"):
            return True
        reply = data.get("reply_to_message")
        if reply and reply.get("from", {}).get("id") == self.state.bot.id:
            return True
        entities = data.get("entities", data.get("caption_entities", []))
        mention = "@" + self.state.bot.username.lower()
        for entity in entities:
            if entity["type"] == "mention":
                start = entity["offset"]
                piece = text.encode("utf-16-le")[start * 2 : (start + entity["length"]) * 2]
                if piece.decode("utf-16-le").lower() == mention:
                    return True
            mentioned = entity.get("user", {}).get("id")
            if entity["type"] == "text_mention" and mentioned == self.state.bot.id:
                return True
        return False

    def reacted(
        self,
        group: GroupChat,
        stored: StoredMessage,
        user: ClientProfile,
        old: list[dict[str, Any]],
        new: list[dict[str, Any]],
    ) -> None:
        """``message_reaction`` in a group needs an administrator bot."""
        if group.bot_status == "administrator":
            self.state.reaction_update(group, stored, user, old, new)
