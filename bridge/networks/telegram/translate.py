"""Telegram updates → network-neutral RemoteEvents (the inbound edge of the connector)."""

from __future__ import annotations

import re
import time
from typing import Awaitable, Callable

from telegram import (
    BusinessConnection,
    BusinessMessagesDeleted,
    Bot,
    Message,
    MessageEntity,
    MessageReactionUpdated,
    ReactionTypeEmoji,
    Update,
)

from bridge.events import (
    ChatRef,
    MediaKind,
    RemoteAccount,
    RemoteContact,
    RemoteEvent,
    RemoteEventKind,
    RemoteLocation,
    RemoteMedia,
    RemoteUser,
    RichText,
)
from bridge.networks.telegram.formatting import telegram_to_matrix

NETWORK = "telegram"
#: Chats reached through a company's Telegram Business account live under this account id
#: prefix, so each business account has portals of its own, apart from the bot's.
BUSINESS_PREFIX = "business:"
#: Bots may download files up to this size with getFile.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
#: A deep link's start parameter, as Telegram allows it: "up to 64 characters long. A-Z, a-z,
#: 0-9, _ and - are allowed" (core.telegram.org/bots/features#deep-linking).
START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")
START_COMMAND = "/start"

#: Message attributes the bridge cannot carry yet, in words for the room's notice.
_UNSUPPORTED_WORDS = (
    ("poll", "a poll"),
    ("dice", "a dice roll"),
    ("game", "a game"),
    ("story", "a story"),
    ("venue", "a venue"),
    ("invoice", "an invoice"),
    ("paid_media", "paid media"),
    ("checklist", "a checklist"),
)


def full_name(first: str | None, last: str | None) -> str:
    return " ".join(p for p in (first, last) if p) or "Telegram user"


class Translator:
    def __init__(self, bot: Bot, account: str) -> None:
        self.bot = bot
        self.account = account

    def translate(self, update: Update) -> list[RemoteEvent]:
        """The network-neutral events for an update (none for updates the bridge does not carry)."""
        if update.message_reaction is not None:
            event = self._reaction(update.message_reaction)
            return [event] if event else []
        if update.business_connection is not None:
            return [self._account(update.business_connection)]
        if update.deleted_business_messages is not None:
            return self._deleted(update.deleted_business_messages)
        if update.my_chat_member is not None:
            event = self._chat_status(update)
            return [event] if event else []
        message = (
            update.message
            or update.edited_message
            or update.business_message
            or update.edited_business_message
        )
        if (
            message is None
            or message.chat.type not in ("private", "group", "supergroup")
            or message.from_user is None
        ):
            return []
        if message.chat.type != "private":
            service = self._group_service(message)
            if service is not None:
                return service
        event = self._message(
            message,
            edited=update.edited_message is not None or update.edited_business_message is not None,
            update_id=update.update_id,
        )
        return [event]

    def _group_service(self, message: Message) -> list[RemoteEvent] | None:
        """Joins, leaves and migration in a group; None when the message is an ordinary one."""
        base = self._base(message)
        if message.migrate_to_chat_id:
            return [
                RemoteEvent(
                    kind=RemoteEventKind.MIGRATE,
                    message_id=f"{message.message_id}/migrate",
                    new_chat_id=str(message.migrate_to_chat_id),
                    description="was upgraded to a supergroup",
                    **base,
                )
            ]
        if message.migrate_from_chat_id or message.group_chat_created or message.supergroup_chat_created:
            return []
        members = [(u, True) for u in message.new_chat_members or ()]
        if message.left_chat_member is not None:
            members.append((message.left_chat_member, False))
        if not members:
            return None
        return [
            RemoteEvent(
                kind=RemoteEventKind.MEMBERSHIP,
                message_id=f"{message.message_id}/member/{user.id}",
                joined=joined,
                **{
                    **base,
                    "sender": RemoteUser(
                        NETWORK, str(user.id), full_name(user.first_name, user.last_name), user.username
                    ),
                },
            )
            for user, joined in members
            if user.id != self.bot.id
        ]

    @staticmethod
    def account_of(message_or_update) -> str | None:
        conn = getattr(message_or_update, "business_connection_id", None)
        return f"{BUSINESS_PREFIX}{conn}" if conn else None

    def _message(self, message: Message, *, edited: bool, update_id: int) -> RemoteEvent:
        base = self._base(message)
        if edited:
            edit_ts = int(message.edit_date.timestamp()) if message.edit_date else update_id
            return RemoteEvent(
                kind=RemoteEventKind.EDIT,
                message_id=f"{message.message_id}/edit/{edit_ts}",
                target_id=str(message.message_id),
                text=self._text(message),
                **base,
            )
        reply_to = str(message.reply_to_message.message_id) if message.reply_to_message else None
        media = self._media(message)
        location = (
            RemoteLocation(message.location.latitude, message.location.longitude)
            if message.location and not message.venue
            else None
        )
        contact = (
            RemoteContact(
                message.contact.phone_number, full_name(message.contact.first_name, message.contact.last_name)
            )
            if message.contact
            else None
        )
        text = self._text(message)
        if media is None and location is None and contact is None and message.text is None:
            description = next(
                (words for attr, words in _UNSUPPORTED_WORDS if getattr(message, attr, None)),
                "a kind of message",
            )
            return RemoteEvent(
                kind=RemoteEventKind.UNSUPPORTED,
                message_id=str(message.message_id),
                text=text,
                description=description,
                **base,
            )
        return RemoteEvent(
            kind=RemoteEventKind.MESSAGE,
            message_id=str(message.message_id),
            text=text,
            media=media,
            location=location,
            contact=contact,
            reply_to=reply_to,
            invite_code=self._invite_code(message),
            **base,
        )

    def _invite_code(self, message: Message) -> str:
        """The start parameter of a deep link (``t.me/<bot>?start=<code>``) the client opened,
        or "". Telegram hands it over only as the text ``/start <code>``, with a bot_command
        entity over ``/start``. Only the bot's own private chats count: in a business chat the
        client wrote to a person, and in a group anyone can type "/start something"."""
        text = message.text
        if text is None or message.chat.type != "private" or message.business_connection_id:
            return ""
        command = next(
            (e for e in message.entities if e.type == MessageEntity.BOT_COMMAND and e.offset == 0),
            None,
        )
        # Offsets count UTF-16 units, but a command that can be /start is ASCII: slicing by
        # code points cuts it in the same place.
        if command is None or not self._is_start(text[: command.length]):
            return ""
        rest = text[command.length :]
        payload = rest.strip()
        return payload if rest[:1].isspace() and START_PAYLOAD.fullmatch(payload) else ""

    def _is_start(self, command: str) -> bool:
        """``/start``, or ``/start@<this bot>`` (usernames are case-insensitive)."""
        name, at, username = command.partition("@")
        if name != START_COMMAND:
            return False
        return not at or username.lower() == self.bot.username.lower()

    def _base(self, message: Message) -> dict:
        user = message.from_user
        assert user is not None
        return dict(
            chat=ChatRef(NETWORK, self.account_of(message) or self.account, str(message.chat.id)),
            sender=RemoteUser(
                NETWORK,
                str(user.id),
                full_name(user.first_name, user.last_name),
                user.username,
                user.language_code,
            ),
            timestamp_ms=int(message.date.timestamp() * 1000),
            chat_title=message.chat.title or full_name(message.chat.first_name, message.chat.last_name),
            is_group=message.chat.type != "private",
            # In a business chat (client ⇄ account owner) whatever the client did not write,
            # the owner wrote from the Telegram app: it is the company's message.
            from_account=bool(message.business_connection_id) and user.id != message.chat.id,
        )

    def _account(self, conn: BusinessConnection) -> RemoteEvent:
        owner = RemoteUser(
            NETWORK,
            str(conn.user.id),
            full_name(conn.user.first_name, conn.user.last_name),
            conn.user.username,
        )
        can_reply = bool(conn.rights.can_reply) if conn.rights is not None else False
        account = RemoteAccount(NETWORK, f"{BUSINESS_PREFIX}{conn.id}", owner, conn.is_enabled, can_reply)
        return RemoteEvent(
            kind=RemoteEventKind.ACCOUNT,
            chat=ChatRef(NETWORK, account.id, str(conn.user_chat_id)),
            sender=owner,
            message_id=f"business/{conn.id}/{int(conn.date.timestamp())}/{conn.is_enabled}",
            timestamp_ms=int(conn.date.timestamp() * 1000),
            account=account,
        )

    def _deleted(self, deleted: BusinessMessagesDeleted) -> list[RemoteEvent]:
        chat = deleted.chat
        client = RemoteUser(NETWORK, str(chat.id), full_name(chat.first_name, chat.last_name), chat.username)
        now_ms = int(time.time() * 1000)
        return [
            RemoteEvent(
                kind=RemoteEventKind.DELETE,
                chat=ChatRef(NETWORK, f"{BUSINESS_PREFIX}{deleted.business_connection_id}", str(chat.id)),
                sender=client,
                message_id=f"{message_id}/delete",
                timestamp_ms=now_ms,
                target_id=str(message_id),
                chat_title=client.display_name,
            )
            for message_id in deleted.message_ids
        ]

    def _chat_status(self, update: Update) -> RemoteEvent | None:
        """A client blocks/unblocks the bot, or a group adds/removes it."""
        member = update.my_chat_member
        assert member is not None
        user = member.from_user
        status = member.new_chat_member.status
        is_group = member.chat.type in ("group", "supergroup")
        if member.chat.type == "private" and status in ("kicked", "member"):
            blocked = status == "kicked"
        elif is_group and status in ("member", "administrator", "left", "kicked"):
            blocked = status in ("left", "kicked")
        else:
            return None
        return RemoteEvent(
            kind=RemoteEventKind.CHAT_STATUS,
            chat=ChatRef(NETWORK, self.account, str(member.chat.id)),
            sender=RemoteUser(
                NETWORK, str(user.id), full_name(user.first_name, user.last_name), user.username
            ),
            message_id=f"status/{update.update_id}",
            timestamp_ms=int(member.date.timestamp() * 1000),
            blocked=blocked,
            is_group=is_group,
            chat_title=member.chat.title or full_name(member.chat.first_name, member.chat.last_name),
        )

    @staticmethod
    def _text(message: Message) -> RichText | None:
        if message.text is not None:
            rendered = telegram_to_matrix(message.text, [e.to_dict() for e in message.entities])
        elif message.caption is not None:
            rendered = telegram_to_matrix(message.caption, [e.to_dict() for e in message.caption_entities])
        else:
            return None
        return RichText(rendered.body, rendered.html)

    def _media(self, message: Message) -> RemoteMedia | None:
        if message.photo:
            p = message.photo[-1]
            return self._remote_media(
                MediaKind.IMAGE, p.file_id, p.file_size, "photo.jpg", "image/jpeg", p.width, p.height
            )
        if message.sticker:
            s = message.sticker
            mime, ext = (
                ("video/webm", "webm")
                if s.is_video
                else ("application/x-tgsticker", "tgs")
                if s.is_animated
                else ("image/webp", "webp")
            )
            return self._remote_media(
                MediaKind.STICKER, s.file_id, s.file_size, f"sticker.{ext}", mime, s.width, s.height
            )
        if message.animation:
            a = message.animation
            return self._remote_media(
                MediaKind.ANIMATION,
                a.file_id,
                a.file_size,
                a.file_name or "animation.mp4",
                a.mime_type or "video/mp4",
                a.width,
                a.height,
                a.duration,
            )
        if message.video:
            v = message.video
            return self._remote_media(
                MediaKind.VIDEO,
                v.file_id,
                v.file_size,
                v.file_name or "video.mp4",
                v.mime_type or "video/mp4",
                v.width,
                v.height,
                v.duration,
            )
        if message.video_note:
            n = message.video_note
            return self._remote_media(
                MediaKind.VIDEO_NOTE,
                n.file_id,
                n.file_size,
                "video_note.mp4",
                "video/mp4",
                n.length,
                n.length,
                n.duration,
            )
        if message.voice:
            v = message.voice
            return self._remote_media(
                MediaKind.VOICE,
                v.file_id,
                v.file_size,
                "voice.ogg",
                v.mime_type or "audio/ogg",
                duration=v.duration,
            )
        if message.audio:
            a = message.audio
            return self._remote_media(
                MediaKind.AUDIO,
                a.file_id,
                a.file_size,
                a.file_name or "audio.mp3",
                a.mime_type or "audio/mpeg",
                duration=a.duration,
            )
        if message.document:
            d = message.document
            return self._remote_media(
                MediaKind.FILE,
                d.file_id,
                d.file_size,
                d.file_name or "file",
                d.mime_type or "application/octet-stream",
            )
        return None

    def _remote_media(
        self,
        kind: MediaKind,
        file_id: str,
        size: int | None,
        name: str,
        mime: str,
        width: int | None = None,
        height: int | None = None,
        duration=None,
    ) -> RemoteMedia:
        duration_ms = None
        if duration is not None:
            duration_ms = (
                int(duration.total_seconds() * 1000)
                if hasattr(duration, "total_seconds")
                else int(duration) * 1000
            )
        too_big = size is not None and size > MAX_DOWNLOAD_BYTES
        return RemoteMedia(
            kind=kind,
            file_name=name,
            mimetype=mime,
            size=size,
            width=width,
            height=height,
            duration_ms=duration_ms,
            fetch=None if too_big else self._fetcher(file_id),
            unavailable_reason=(
                f"it is {size / 1e6:.1f} MB and Telegram lets bots download at most 20 MB; ask the client to send it another way"
                if too_big and size
                else ""
            ),
        )

    def _fetcher(self, file_id: str) -> Callable[[], Awaitable[bytes]]:
        async def fetch() -> bytes:
            file = await self.bot.get_file(file_id)
            return bytes(await file.download_as_bytearray())

        return fetch

    def _reaction(self, update: MessageReactionUpdated) -> RemoteEvent | None:
        user = update.user
        if user is None:
            return None  # an anonymous group admin: no person to show it as
        emojis = tuple(r.emoji for r in update.new_reaction if isinstance(r, ReactionTypeEmoji))
        return RemoteEvent(
            kind=RemoteEventKind.REACTION,
            chat=ChatRef(NETWORK, self.account, str(update.chat.id)),
            sender=RemoteUser(
                NETWORK, str(user.id), full_name(user.first_name, user.last_name), user.username
            ),
            message_id=f"{update.message_id}/reaction/{user.id}/{int(update.date.timestamp())}",
            timestamp_ms=int(update.date.timestamp() * 1000),
            target_id=str(update.message_id),
            reactions=emojis,
            chat_title=update.chat.title or full_name(update.chat.first_name, update.chat.last_name),
            is_group=update.chat.type != "private",
        )
