"""editMessageText, editMessageCaption, editMessageReplyMarkup, deleteMessage, deleteMessages, setMessageReaction.

The rules are the documented ones: bots edit their own messages (and, in business chats, the
owner's within 48 hours); deleteMessage works on the bot's own messages and, in private chats,
on the client's, always within 48 hours; bots set at most one reaction per message. None of
these produce an update for the bot itself. deleteMessage and setMessageReaction take no
``business_connection_id`` (it is ignored like any unknown parameter).
"""

from __future__ import annotations

import copy
from typing import Any

from . import media
from .api_base import ApiBase, Handler, Target
from .errors import (
    CANT_BE_EDITED,
    CANT_DELETE,
    CANT_DELETE_FOR_EVERYONE,
    DELETE_NOT_FOUND,
    EDIT_NOT_FOUND,
    NO_CAPTION_TO_EDIT,
    NO_TEXT_TO_EDIT,
    NOT_MODIFIED,
    REACT_NOT_FOUND,
    REACTIONS_TOO_MANY,
    TEXT_EMPTY,
    bad_request,
)
from .params import Params
from .reactions import BOT_MAX_REACTIONS, ReactionError, parse_reactions
from .state import (
    BUSINESS_EDIT_WINDOW,
    DELETE_WINDOW,
    Conversation,
    GroupChat,
    StoredMessage,
)

MAX_DELETE_BATCH = 100
_UNDELETABLE_SERVICE = ("supergroup_chat_created", "channel_chat_created")


class EditMethods(ApiBase):
    def edit_handlers(self) -> dict[str, Handler]:
        return {
            "editMessageText": self.edit_message_text,
            "editMessageCaption": self.edit_message_caption,
            "editMessageReplyMarkup": self.edit_message_reply_markup,
            "deleteMessage": self.delete_message,
            "deleteMessages": self.delete_messages,
            "setMessageReaction": self.set_message_reaction,
        }

    # ------------------------------------------------------------------ edits

    async def edit_message_text(self, params: Params) -> Any:
        target, stored = self._editable(params)
        text = params.get_str("text")
        if not text:
            raise bad_request(TEXT_EMPTY)
        if "text" not in stored.data:
            raise bad_request(NO_TEXT_TO_EDIT)
        formatted = self._formatted(params, text, "entities")
        markup = self._reply_markup(params)
        changes: dict[str, Any] = {"text": formatted.text, "entities": formatted.entities or None}
        return self._apply_edit(stored, changes, markup)

    async def edit_message_caption(self, params: Params) -> Any:
        target, stored = self._editable(params)
        if not any(kind in stored.data for kind in media.CAPTIONED_KINDS):
            raise bad_request(NO_CAPTION_TO_EDIT)
        caption = self._caption(params)
        markup = self._reply_markup(params)
        changes: dict[str, Any] = {
            "caption": caption.get("caption"),
            "caption_entities": caption.get("caption_entities"),
        }
        if params.values.get("show_caption_above_media") is not None:
            changes["show_caption_above_media"] = caption.get("show_caption_above_media")
        return self._apply_edit(stored, changes, markup)

    async def edit_message_reply_markup(self, params: Params) -> Any:
        """Only the inline keyboard changes; without ``reply_markup`` it is removed, and a message
        that had none answers "message is not modified", as on Telegram."""
        target, stored = self._editable(params)
        return self._apply_edit(stored, {}, self._reply_markup(params))

    def _editable(self, params: Params) -> tuple[Target, StoredMessage]:
        """The message an edit addresses, after the ownership and window checks."""
        if (params.get_str("inline_message_id") or "").strip():
            raise bad_request("MESSAGE_ID_INVALID")  # the sandbox has no inline messages
        if not (params.get_str("chat_id") or "").strip():
            raise bad_request("message identifier is not specified")
        target = self._target(params)
        message_id = params.get_int("message_id")
        stored = target.chat.find(message_id) if message_id else None
        if stored is None:
            raise bad_request(EDIT_NOT_FOUND)
        if target.connection is not None:
            # Business: the bot's own messages, and the owner's for 48 hours.
            owners_recent = stored.sender == "owner" and self.state.now() - stored.date < BUSINESS_EDIT_WINDOW
            if not (stored.by_bot or owners_recent):
                raise bad_request(CANT_BE_EDITED)
        elif not stored.by_bot:
            raise bad_request(CANT_BE_EDITED)
        self._check_writable(target)
        return target, stored

    def _apply_edit(
        self,
        stored: StoredMessage,
        changes: dict[str, Any],
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Apply field changes (None removes a field) and the new keyboard, or refuse a no-op.

        Like on Telegram, an edit without ``reply_markup`` removes the inline keyboard.
        """
        data = stored.data
        same_content = all(data.get(key) == value for key, value in changes.items())
        if same_content and data.get("reply_markup") == markup:
            raise bad_request(NOT_MODIFIED)
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        if markup is None:
            data.pop("reply_markup", None)
        else:
            data["reply_markup"] = markup
        data["edit_date"] = self.state.now()
        self.state.outbox.notify()
        return copy.deepcopy(data)

    # ------------------------------------------------------------------ deletions

    async def delete_message(self, params: Params) -> Any:
        chat = self._chat(params)
        message_id = params.get_int("message_id")
        stored = chat.find(message_id) if message_id else None
        if stored is None:
            raise bad_request(DELETE_NOT_FOUND)
        self._check_deletable(chat, stored)
        stored.deleted = True
        self.state.outbox.notify()
        return True

    async def delete_messages(self, params: Params) -> Any:
        """Deletes what exists ("messages that can't be found are skipped"); refuses the whole
        batch if one found message may not be deleted."""
        chat = self._chat(params)
        raw = params.get_json("message_ids", "message identifiers")
        if not isinstance(raw, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
            raise bad_request("can't parse message identifiers JSON object")
        if not raw:
            raise bad_request("message identifiers are not specified")
        if len(raw) > MAX_DELETE_BATCH:
            raise bad_request("too many message identifiers specified")
        found = [m for m in (chat.find(message_id) for message_id in raw) if m is not None]
        for stored in found:
            self._check_deletable(chat, stored)
        for stored in found:
            stored.deleted = True
        self.state.outbox.notify()
        return True

    def _check_deletable(self, chat: Conversation, stored: StoredMessage) -> None:
        if any(key in stored.data for key in _UNDELETABLE_SERVICE):
            raise bad_request(CANT_DELETE)
        if isinstance(chat, GroupChat):
            # Others' messages need an administrator bot.
            if not stored.by_bot and chat.bot_status != "administrator":
                raise bad_request(CANT_DELETE)
        if self.state.now() - stored.date >= DELETE_WINDOW:
            raise bad_request(CANT_DELETE_FOR_EVERYONE)

    # ------------------------------------------------------------------ reactions

    async def set_message_reaction(self, params: Params) -> Any:
        chat = self._chat(params)
        message_id = params.get_int("message_id")
        stored = chat.find(message_id) if message_id else None
        if stored is None:
            raise bad_request(REACT_NOT_FOUND)
        present = [
            reaction
            for user_id, listed in stored.reactions.items()
            if user_id != self.state.bot.id
            for reaction in listed
        ]
        try:
            reactions = parse_reactions(params.get_json("reaction", "reaction types"), present)
        except ReactionError as exc:
            raise bad_request(str(exc)) from None
        if reactions and stored.is_service():
            raise bad_request("REACTION_INVALID")
        if len(reactions) > BOT_MAX_REACTIONS:
            raise bad_request(REACTIONS_TOO_MANY)
        if reactions:
            stored.reactions[self.state.bot.id] = reactions
        else:
            stored.reactions.pop(self.state.bot.id, None)
        self.state.outbox.notify()
        return True
