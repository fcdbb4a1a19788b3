"""LINE webhook events -> RemoteEvents, from payloads shaped like the examples in LINE's
Messaging API reference (webhook event objects). LINE's examples shorten ids ("U4af49806..."):
here they have their real length, U/C/R and 32 hex digits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.events import MediaKind, RemoteEventKind
from bridge.networks import spec_of
from bridge.networks.line.translate import ContentRef, Inbound, Profile, Source, Translator, invite_code

BOT = "U" + "b" * 32
USER = "U4af4980629" + "0" * 22
OTHER = "U91eeaf62d9" + "0" * 22
GROUP = "Ca56f94637c" + "0" * 22
ROOM = "Ra8dbf4673c" + "0" * 22
PICTURE = "https://profile.line-scdn.net/0hTaro"
NAMES = {USER: Profile("Taro Yamada", "ja", PICTURE), OTHER: Profile("Hanako")}


class Directory:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def member(self, source: Source, user_id: str) -> Profile:
        self.asked.append((source.chat_id, user_id))
        return NAMES.get(user_id, Profile("LINE user"))

    async def title(self, source: Source) -> str:
        return "Family" if source.kind == "group" else "Multi-person chat"


class Fetcher:
    def __init__(self) -> None:
        self.refs: list[ContentRef] = []

    async def __call__(self, ref: ContentRef) -> bytes:
        self.refs.append(ref)
        return b"bytes of " + ref.message_id.encode()


def envelope(**event: Any) -> dict[str, Any]:
    base = {
        "mode": "active",
        "timestamp": 1462629479859,
        "source": {"type": "user", "userId": USER},
        "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZR",
        "deliveryContext": {"isRedelivery": False},
    }
    return {**base, **event}


async def translate(*events: dict[str, Any], fetch: Fetcher | None = None) -> list[Inbound]:
    translator = Translator(BOT, Directory(), fetch or Fetcher())
    return await translator.payload({"destination": BOT, "events": list(events)})


async def one(event: dict[str, Any], fetch: Fetcher | None = None) -> Inbound:
    items = await translate(event, fetch=fetch)
    assert len(items) == 1, items
    return items[0]


GROUP_SOURCE = {"type": "group", "groupId": GROUP, "userId": USER}


async def test_a_text_message_with_a_mention_and_an_emoji_keeps_their_text() -> None:
    item = await one(
        envelope(
            replyToken="nHuyWiB7yP5Zw52FIkcQobQuGDXCTA",
            type="message",
            source=GROUP_SOURCE,
            message={
                "id": "444573844083572737",
                "type": "text",
                "quoteToken": "q3Plxr4AgKdf9dT8wCUY7Y6",
                "text": "@All @example Good Morning!! (love)",
                "emojis": [
                    {"index": 29, "length": 6, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}
                ],
                "mention": {
                    "mentionees": [
                        {"index": 0, "length": 4, "type": "all"},
                        {"index": 5, "length": 8, "userId": OTHER, "type": "user", "isSelf": False},
                    ]
                },
            },
        )
    )
    event = item.event
    assert event.kind is RemoteEventKind.MESSAGE
    assert (event.chat.network, event.chat.account, event.chat.chat_id) == ("line", BOT, GROUP)
    assert event.is_group and event.chat_title == "Family"
    assert (
        event.sender.id == USER
        and event.sender.display_name == "Taro Yamada"
        and event.sender.language == "ja"
        and event.sender.picture == PICTURE  # the ghost's avatar; only the connector reads it
    )
    assert event.message_id == "444573844083572737"
    assert event.timestamp_ms == 1462629479859
    # LINE puts an emoji's alt text and the mentioned name into the text itself.
    assert event.text is not None and event.text.body == "@All @example Good Morning!! (love)"
    assert event.invite_code == ""  # only a one-to-one chat brings an invitation
    assert item.reply_token == "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA"
    assert item.quote_token == "q3Plxr4AgKdf9dT8wCUY7Y6"
    assert item.webhook_event_id == "01FZ74A0TDDPYRVKNK77XKC3ZR" and not item.redelivery


async def test_a_quoting_message_replies_to_the_quoted_one() -> None:
    item = await one(
        envelope(
            type="message",
            replyToken="r1",
            message={
                "type": "text",
                "id": "468789577898262530",
                "quotedMessageId": "468789532432007169",
                "quoteToken": "q3Plxr4AgKdf9dT8wCUY7Y6",
                "markAsReadToken": "30yhdy232",
                "text": "Chicken, please.",
            },
        )
    )
    assert item.event.reply_to == "468789532432007169"
    assert item.event.chat.chat_id == USER and not item.event.is_group and item.event.chat_title == ""
    assert item.read_token == "30yhdy232"


async def test_the_invitation_code_of_an_oamessage_link_is_picked_up_in_one_to_one_chats() -> None:
    code = "Ab3" * 8
    item = await one(
        envelope(
            type="message", message={"id": "1", "type": "text", "text": f"Hello! My reference: HL-{code}"}
        )
    )
    assert item.event.invite_code == code
    assert (
        invite_code(f"hl-{code}") == "" and invite_code(f"HL-{code}x") == "" and invite_code("HL-short") == ""
    )


async def test_image_video_audio_and_file_become_media_fetched_on_demand() -> None:
    fetch = Fetcher()
    items = await translate(
        envelope(
            type="message",
            message={
                "type": "image",
                "id": "354718705033693859",
                "quoteToken": "q3Plxr4AgKdf9dT8wCUY7Y6",
                "contentProvider": {"type": "line"},
                "imageSet": {"id": "E005D41A7288F41B65593ED38FF6E983", "index": 1, "total": 2},
            },
        ),
        envelope(
            type="message",
            webhookEventId="01FZ74A0TDDPYRVKNK77XKC3Z2",
            message={
                "id": "325708",
                "type": "video",
                "quoteToken": "q3Plxr4AgKdf9dT8wCUY7Y6",
                "duration": 60000,
                "contentProvider": {
                    "type": "external",
                    "originalContentUrl": "https://example.com/original.mp4",
                    "previewImageUrl": "https://example.com/preview.jpg",
                },
            },
        ),
        envelope(
            type="message",
            webhookEventId="01FZ74A0TDDPYRVKNK77XKC3Z3",
            message={"id": "325709", "type": "audio", "duration": 60000, "contentProvider": {"type": "line"}},
        ),
        envelope(
            type="message",
            webhookEventId="01FZ74A0TDDPYRVKNK77XKC3Z4",
            message={"id": "325710", "type": "file", "fileName": "file.txt", "fileSize": 2138},
        ),
        fetch=fetch,
    )
    image, video, audio, file = (i.event.media for i in items)
    assert image is not None and (image.kind, image.mimetype, image.file_name) == (
        MediaKind.IMAGE,
        "image/jpeg",
        "image-354718705033693859.jpg",
    )
    assert video is not None and (video.kind, video.mimetype, video.duration_ms) == (
        MediaKind.VIDEO,
        "video/mp4",
        60000,
    )
    assert audio is not None and (audio.kind, audio.file_name, audio.duration_ms) == (
        MediaKind.VOICE,
        "audio-325709.m4a",
        60000,
    )
    assert file is not None and (file.kind, file.file_name, file.mimetype, file.size) == (
        MediaKind.FILE,
        "file.txt",
        "text/plain",
        2138,
    )
    assert [await m.fetch() for m in (image, video, audio, file) if m.fetch] == [
        b"bytes of 354718705033693859",
        b"bytes of 325708",
        b"bytes of 325709",
        b"bytes of 325710",
    ]
    assert fetch.refs[1] == ContentRef("325708", "video", "https://example.com/original.mp4")
    assert fetch.refs[0] == ContentRef("354718705033693859", "image", "")


async def test_a_location_keeps_its_title_and_address_as_text() -> None:
    item = await one(
        envelope(
            type="message",
            message={
                "id": "325708",
                "type": "location",
                "title": "my location",
                "address": "1-3 Kioicho, Chiyoda-ku, Tokyo, 102-8282, Japan",
                "latitude": 35.67966,
                "longitude": 139.73669,
            },
        )
    )
    location = item.event.location
    assert location is not None and (location.latitude, location.longitude) == (35.67966, 139.73669)
    assert item.event.text is not None
    assert item.event.text.body == "my location, 1-3 Kioicho, Chiyoda-ku, Tokyo, 102-8282, Japan"


async def test_a_sticker_is_a_notice_with_its_keywords_and_a_message_stickers_text() -> None:
    item = await one(
        envelope(
            type="message",
            message={
                "type": "sticker",
                "id": "1501597916",
                "quoteToken": "q3Plxr4AgKdf9dT8wCUY7Y6",
                "stickerId": "52002738",
                "packageId": "11537",
                "stickerResourceType": "ANIMATION",
                "keywords": ["cony", "sally", "Staring", "hi", "whatsup"],
            },
        )
    )
    media = item.event.media
    assert media is not None and media.kind is MediaKind.STICKER and media.fetch is None
    assert "cony, sally, Staring, hi, whatsup" in media.unavailable_reason
    assert item.quote_token == "q3Plxr4AgKdf9dT8wCUY7Y6"
    item = await one(
        envelope(
            type="message",
            message={
                "type": "sticker",
                "id": "1501597917",
                "stickerId": "738839",
                "packageId": "12287",
                "stickerResourceType": "MESSAGE",
                "keywords": ["Anticipation"],
                "text": "Let's hang out this weekend!",
            },
        )
    )
    assert item.event.text is not None and item.event.text.body == "Let's hang out this weekend!"


async def test_an_unsend_is_a_delete_of_the_message_with_an_id_of_its_own() -> None:
    item = await one(envelope(type="unsend", source=GROUP_SOURCE, unsend={"messageId": "325708"}))
    assert item.event.kind is RemoteEventKind.DELETE
    assert item.event.target_id == "325708"
    assert item.event.message_id == "01FZ74A0TDDPYRVKNK77XKC3ZR"


async def test_follow_and_unfollow_are_the_client_unblocking_and_blocking() -> None:
    follow = await one(
        envelope(type="follow", replyToken="85cbe770fa8b4f45bbe077b1d4be4a36", follow={"isUnblocked": True})
    )
    assert follow.event.kind is RemoteEventKind.CHAT_STATUS and not follow.event.blocked
    assert follow.event.sender.display_name == "Taro Yamada"
    assert follow.reply_token == "85cbe770fa8b4f45bbe077b1d4be4a36"
    unfollow = await one(envelope(type="unfollow", webhookEventId="01FZ74A0TDDPYRVKNK77XKC3Z9"))
    assert unfollow.event.kind is RemoteEventKind.CHAT_STATUS and unfollow.event.blocked
    assert unfollow.event.message_id == "01FZ74A0TDDPYRVKNK77XKC3Z9"


async def test_join_and_leave_open_and_close_one_portal_per_group_or_room() -> None:
    joined = await one(
        envelope(
            type="join",
            replyToken="0f3779fba3b349968c5d07db31eab56f",
            source={"type": "group", "groupId": GROUP},
        )
    )
    event = joined.event
    assert event.kind is RemoteEventKind.CHAT_STATUS and event.is_group and not event.blocked
    assert event.chat.chat_id == GROUP and event.chat_title == "Family"
    assert event.sender.id == GROUP  # LINE names nobody: the group's stand-in ghost
    left = await one(envelope(type="leave", source={"type": "room", "roomId": ROOM}))
    assert left.event.kind is RemoteEventKind.CHAT_STATUS and left.event.blocked
    assert (
        left.event.chat.chat_id == ROOM
        and left.event.is_group
        and left.event.chat_title == "Multi-person chat"
    )


async def test_member_events_give_each_member_a_ghost_and_an_id_of_their_own() -> None:
    items = await translate(
        envelope(
            type="memberJoined",
            replyToken="0f3779fba3b349968c5d07db31eab56f",
            source={"type": "group", "groupId": GROUP},
            joined={"members": [{"type": "user", "userId": USER}, {"type": "user", "userId": OTHER}]},
        )
    )
    assert [(i.event.kind, i.event.sender.display_name, i.event.joined) for i in items] == [
        (RemoteEventKind.MEMBERSHIP, "Taro Yamada", True),
        (RemoteEventKind.MEMBERSHIP, "Hanako", True),
    ]
    assert len({i.event.message_id for i in items}) == 2
    items = await translate(
        envelope(
            type="memberLeft",
            source={"type": "room", "roomId": ROOM},
            left={"members": [{"type": "user", "userId": OTHER}]},
        )
    )
    assert [(i.event.sender.id, i.event.joined, i.event.chat.chat_id) for i in items] == [
        (OTHER, False, ROOM)
    ]


async def test_an_edit_in_a_group_carries_the_new_text() -> None:
    item = await one(
        envelope(
            type="messageEdited",
            source=GROUP_SOURCE,
            message={"id": "444573844083572737", "type": "text", "text": "Good evening!!"},
        )
    )
    assert item.event.kind is RemoteEventKind.EDIT and item.event.target_id == "444573844083572737"
    assert item.event.text is not None and item.event.text.body == "Good evening!!"


async def test_a_group_member_lines_desktop_does_not_name_gets_the_groups_stand_in() -> None:
    item = await one(
        envelope(
            type="message",
            source={"type": "group", "groupId": GROUP},
            message={"id": "7", "type": "text", "text": "hi"},
        )
    )
    assert item.event.sender.id == GROUP and item.event.sender.display_name == "Someone in the group"


async def test_redelivered_and_standby_events_carry_no_reply_token() -> None:
    message = {"id": "8", "type": "text", "text": "again"}
    item = await one(
        envelope(type="message", replyToken="t", deliveryContext={"isRedelivery": True}, message=message)
    )
    assert item.redelivery and item.reply_token == ""
    item = await one(envelope(type="message", replyToken="t", mode="standby", message=message))
    assert item.reply_token == ""


async def test_what_the_bridge_cannot_carry_is_said_or_ignored_never_raised() -> None:
    postback = await one(
        envelope(type="postback", replyToken="t", postback={"data": "action=buy&itemid=111"})
    )
    assert postback.event.kind is RemoteEventKind.UNSUPPORTED
    unknown_message = await one(envelope(type="message", message={"id": "9", "type": "hologram"}))
    assert unknown_message.event.kind is RemoteEventKind.UNSUPPORTED
    broken = await one(
        envelope(type="message", message={"id": "10", "type": "location", "latitude": "north"})
    )
    assert broken.event.kind is RemoteEventKind.UNSUPPORTED
    ignored = [
        envelope(type="beacon", beacon={"hwid": "d41d8cd98f", "type": "enter"}),
        envelope(type="accountLink", link={"result": "ok", "nonce": "xxxxxxxxxxxxxxx"}),
        envelope(type="newKindOfEvent"),
        envelope(type="message", source={"type": "user"}, message={"id": "11", "type": "text", "text": "x"}),
        envelope(type="message", message={"type": "text", "text": "no id"}),
        envelope(type="unfollow", source={"type": "group", "groupId": GROUP}),
        "not an event",
    ]
    assert await translate(*ignored) == []


@pytest.mark.parametrize("field", ["timestamp", "webhookEventId", "deliveryContext", "mode"])
async def test_missing_envelope_fields_have_safe_defaults(field: str) -> None:
    event = envelope(type="message", message={"id": "12", "type": "text", "text": "x"})
    del event[field]
    item = await one(copy.deepcopy(event))
    assert item.event.message_id == "12" and item.webhook_event_id
    again = await one(copy.deepcopy(event))
    assert again.webhook_event_id == item.webhook_event_id  # a digest when LINE's id is missing


@pytest.mark.parametrize(
    "source",
    [
        {"type": "user", "userId": USER},
        {"type": "group", "groupId": GROUP, "userId": USER},
        {"type": "room", "roomId": ROOM, "userId": USER},
    ],
)
async def test_the_spec_reads_a_portal_id_as_a_group_exactly_when_the_translator_did(source: dict) -> None:
    # The policy's group rules read the portal's chat id through the spec, long after the
    # webhook: a LINE group must not pass for a one-to-one chat there.
    event = (
        await one(envelope(type="message", source=source, message={"id": "1", "type": "text", "text": "hi"}))
    ).event
    assert spec_of("line").is_group_chat(event.chat.chat_id) is event.is_group
    assert event.is_group is (source["type"] != "user")
