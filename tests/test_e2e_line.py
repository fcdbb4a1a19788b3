"""LINE end to end: the sandbox LINE platform, the bridge process, a real Synapse and a
matrix-nio employee.

Every test waits on conditions (the sandbox's long polls, the employee's sync) and never on a
fixed sleep. The sandbox is the session's, shared with the other tests: what a test changes in
it (the quota, faults) is put back before it ends; its clock only ever moves forward, which
changes nothing for later tests (reply tokens and windows are measured from their own events).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any, Callable

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nio import ProfileGetResponse

from bridge.devstack import DevStack
from sandbox.employee import Employee, SeenEvent
from tests.conftest import BridgeFactory, BridgeProcess
from tests.support import BOT, SIGNATURE, bot_notice_about, bot_notice_in, download, eventually, upload

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
#: Just enough of an MP4 and an M4A for the sandbox (and LINE's apps) to tell them by their bytes.
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
M4A = b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A isom" + b"\x00" * 64
PDF = b"%PDF-1.4\n% terms and conditions\n"
DISCLAIMER = "is recorded for regulatory purposes"
PUSH = "POST /v2/bot/message/push"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def utf16_index(text: str, part: str) -> int:
    """Where ``part`` starts in ``text``, in UTF-16 code units (LINE's offsets)."""
    return len(text[: text.index(part)].encode("utf-16-le")) // 2


async def line(stack: DevStack, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A call to the LINE sandbox (control API, or the Messaging API with the bridge's token)."""
    assert stack.line is not None
    headers = (
        {"Authorization": f"Bearer {stack.line.channel_access_token}"} if path.startswith("/v2/") else {}
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
        async with http.request(method, f"{stack.line.url}{path}", json=body, headers=headers) as resp:
            data = await resp.json()
            assert resp.status == 200, (path, resp.status, data)
            return data


async def usage(stack: DevStack) -> int:
    """This month's pushes as LINE counts them (GET /v2/bot/message/quota/consumption)."""
    return (await line(stack, "GET", "/v2/bot/message/quota/consumption"))["totalUsage"]


async def faults_left(stack: DevStack) -> int:
    return (await line(stack, "GET", "/control/state"))["faults"]["remaining"]


class LineClient:
    """A LINE user played through the sandbox's control API."""

    def __init__(self, stack: DevStack, alias: str, name: str) -> None:
        assert stack.line is not None and stack.line.url
        self.stack = stack
        self.base = stack.line.url
        self.alias = alias
        self.name = name
        self.user_id = ""

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
            async with http.request(method, f"{self.base}{path}", json=body) as resp:
                data = await resp.json()
                assert resp.status == 200, (path, resp.status, data)
                return data

    async def send(self, **content: Any) -> dict[str, Any]:
        """Any message content of the control API (text, image, sticker, location...)."""
        sent = await self.call(
            "POST", f"/client/{self.alias}/messages", {"displayName": self.name, **content}
        )
        self.user_id = sent["userId"]
        return sent

    async def say(self, text: str) -> dict[str, Any]:
        return await self.send(text=text)

    async def follow(self) -> dict[str, Any]:
        answer = await self.call("POST", f"/client/{self.alias}/follow", {"displayName": self.name})
        self.user_id = answer["userId"]
        return answer

    async def unfollow(self) -> dict[str, Any]:
        return await self.call("POST", f"/client/{self.alias}/unfollow")

    async def unsend(self, message_id: str) -> dict[str, Any]:
        return await self.call("POST", f"/client/{self.alias}/unsend/{message_id}")

    async def set_picture(self, image: bytes | None = None, *, status: int = 200) -> dict[str, Any]:
        """A new profile picture, at a new URL on the sandbox's CDN (no ``image``: a PNG the
        sandbox makes); with an error ``status`` that URL answers the error instead."""
        body: dict[str, Any] = (
            {"status": status} if image is None else {"image": b64(image), "status": status}
        )
        answer = await self.call("PUT", f"/client/{self.alias}/picture", body)
        self.user_id = answer["userId"]
        return answer

    async def mend_picture(self) -> dict[str, Any]:
        """The current picture's URL serves the picture from now on."""
        return await self.call("PATCH", f"/client/{self.alias}/picture", {"status": 200})

    async def picture(self) -> dict[str, Any]:
        """The current picture as the sandbox serves it (``fetches``: requests its URL got)."""
        return await self.call("GET", f"/client/{self.alias}/picture")

    async def inbox(self) -> list[dict[str, Any]]:
        """Everything the account delivered to this user, oldest first."""
        return (await self.call("GET", f"/client/{self.alias}/messages"))["messages"]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 40
    ) -> dict[str, Any]:
        """The first message from the account matching ``predicate``, on the sandbox's long poll
        (which also waits for media fetches to finish)."""
        deadline = time.monotonic() + timeout
        after = ""
        while True:
            got = await self.call("GET", f"/client/{self.alias}/messages?timeout=5{after}")
            for view in got["messages"]:
                if predicate(view):
                    return view
            if got["messages"]:
                after = f"&after={got['messages'][-1]['seq']}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.alias} did not receive {what} within {timeout}s")

    async def wait_for_text(self, needle: str, timeout: float = 40) -> dict[str, Any]:
        return await self.wait_for(lambda v: needle in text_of(v), repr(needle), timeout)


def text_of(view: dict[str, Any]) -> str:
    return (view.get("message") or {}).get("text", "") or ""


def new_client(stack: DevStack, name: str) -> LineClient:
    first = name.split()[0].lower()
    return LineClient(stack, f"{first}{secrets.token_hex(4)}", name)


def ghost(stack: DevStack, user_id: str) -> str:
    return stack.config.ghost_namer().user_id("line", user_id)


async def open_portal(
    stack: DevStack, employee: Employee, client: LineClient, text: str, *, disclaimer: bool = True
) -> tuple[str, dict[str, Any]]:
    """The client's first message, in its new portal; with ``disclaimer`` also waits until the
    disclaimer (a reply with that message's token) reached the client, so nothing later races
    it for the token."""
    sent = await client.say(text)
    room = (await employee.wait_for_message(text, sender=ghost(stack, client.user_id))).room_id
    if disclaimer:
        await client.wait_for_text(DISCLAIMER)
    return room, sent


async def avatar(employee: Employee, user_id: str) -> str | None:
    """The user's avatar (an mxc URL) as the employee's homeserver gives it; None: none. Read
    from the whole profile: for a user without avatar Synapse answers the avatar_url endpoint
    with ``{}``, which matrix-nio's get_avatar takes for an error."""
    answer = await employee.client.get_profile(user_id)
    assert isinstance(answer, ProfileGetResponse), answer
    return answer.avatar_url


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def in_room(room: str, msgtype: str) -> Callable[[SeenEvent], bool]:
    return lambda e: e.room_id == room and e.type == "m.room.message" and e.content.get("msgtype") == msgtype


async def test_a_line_client_is_bridged_both_ways(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client = LineClient(stack, f"lina{secrets.token_hex(4)}", "Lina Line")
    await client.say("Hello from LINE")
    msg = await employee.wait_for_message("Hello from LINE", sender=ghost(stack, client.user_id))
    assert msg.content["net.houseline.remote"]["network"] == "line"
    # The name is the one LINE's profile endpoint gives (webhooks carry no names).
    name = await employee.client.get_displayname(ghost(stack, client.user_id))
    assert name.displayname == "Lina Line (LINE)"
    await employee.send_text(msg.room_id, "Hello Lina, how can we help?")
    got = await client.wait_for_text("Hello Lina, how can we help?")
    assert text_of(got) == f"{SIGNATURE}\nHello Lina, how can we help?"
    # The disclaimer took the client message's reply token (free, single use); the answer
    # is a push, which counts against the month's quota.
    inbox = await client.inbox()
    assert [v["via"] for v in inbox] == ["reply", "push"]
    assert DISCLAIMER in text_of(inbox[0])


async def test_inbound_text_media_sticker_and_location(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    assert stack.line is not None
    client = new_client(stack, "Kenji Media")
    room, _ = await open_portal(stack, employee, client, "konnichiwa")
    sender = ghost(stack, client.user_id)

    # Text: a Unicode emoji (two UTF-16 units), a LINE emoji (its alt text is in the text) and a
    # mention of the account; the text arrives as the client wrote it.
    text = "Hi @Example Advisers 🍎 can we talk (love)"
    await client.send(
        text=text,
        emojis=[
            {
                "index": utf16_index(text, "(love)"),
                "length": 6,
                "productId": "5ac1bfd5040ab15980c9b435",
                "emojiId": "001",
            }
        ],
        mention=[{"index": utf16_index(text, "@Example"), "length": 17, "userId": stack.line.bot_user_id}],
    )
    said = await employee.wait_for_message(text, room, sender=sender)
    assert said.content["msgtype"] == "m.text"

    await client.send(image=b64(PNG))
    photo = await employee.wait_for_event(in_room(room, "m.image"), 30, "the photo")
    assert photo.sender == sender
    assert hashlib.sha256(await download(employee, photo.content["url"])).hexdigest() == (
        hashlib.sha256(PNG).hexdigest()
    )

    await client.send(video=b64(MP4), duration=3000)
    video = await employee.wait_for_event(in_room(room, "m.video"), 30, "the video")
    assert await download(employee, video.content["url"]) == MP4
    assert video.content["info"]["duration"] == 3000

    await client.send(audio=b64(M4A), duration=1500)
    audio = await employee.wait_for_event(in_room(room, "m.audio"), 30, "the voice message")
    assert await download(employee, audio.content["url"]) == M4A

    await client.send(file=b64(PDF), fileName="terms.pdf")
    doc = await employee.wait_for_event(in_room(room, "m.file"), 30, "the file")
    assert doc.content["filename"] == "terms.pdf"
    assert doc.content["info"]["mimetype"] == "application/pdf"
    assert await download(employee, doc.content["url"]) == PDF

    # LINE gives bots no sticker picture: the room is told what it was, with LINE's keywords.
    await client.send(
        sticker={"packageId": "446", "stickerId": "1988", "keywords": ["Happy", "Hello", "Wave"]}
    )
    sticker = await employee.wait_for_event(bot_notice_in(room, "LINE sticker 446/1988"), 30, "the sticker")
    assert sticker.content["msgtype"] == "m.notice"
    assert "Happy, Hello, Wave" in sticker.content["body"]

    await client.send(location={"latitude": 35.681236, "longitude": 139.767125, "title": "Tokyo Station"})
    place = await employee.wait_for_event(in_room(room, "m.location"), 30, "the location")
    assert place.content["geo_uri"] == "geo:35.681236,139.767125"
    assert place.sender == sender


async def test_unsend_is_an_annotation_and_blocking_is_noticed(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client = new_client(stack, "Mika Unsend")
    await client.follow()  # a friend (only friends can block the account)
    room, _ = await open_portal(stack, employee, client, "hello, a friend here")

    sent = await client.say("please forget this")
    original = await employee.wait_for_message("please forget this", room)
    await client.unsend(sent["id"])
    notice = await employee.wait_for_event(bot_notice_about(room, original.event_id), 30, "the unsend note")
    assert "deleted this message on LINE" in notice.content["body"]
    assert notice.content["net.houseline.client_deleted"]["event_id"] == original.event_id
    # The record keeps the message: no redaction, and the homeserver still serves its content.
    assert not [e for e in employee.events if e.room_id == room and e.type == "m.room.redaction"]
    kept = await employee.client.room_get_event(room, original.event_id)
    assert kept.event.source["content"]["body"] == "please forget this"

    await client.unfollow()
    blocked = await employee.wait_for_event(
        bot_notice_in(room, "blocked the company on LINE"), 30, "the block notice"
    )
    assert "Mika Unsend blocked the company" in blocked.content["body"]
    await client.follow()
    await employee.wait_for_event(bot_notice_in(room, "unblocked the company on LINE"), 30, "the unblock")
    await employee.send_text(room, "welcome back")
    await client.wait_for_text("welcome back")


async def test_a_group_is_one_portal_with_a_ghost_per_member(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    tag = secrets.token_hex(4)
    aiko, bo, cho = f"aiko{tag}", f"bo{tag}", f"cho{tag}"
    group = await line(
        stack,
        "POST",
        "/groups",
        {
            "name": f"Family office {tag}",
            "members": [{"user": aiko, "displayName": "Aiko Arai"}, {"user": bo, "displayName": "Bo Berg"}],
        },
    )
    ids = {m["displayName"]: m["userId"] for m in group["members"]}
    gid = group["groupId"]
    # The account joining the group opens the portal, named after the group.
    added = await employee.wait_for_event(
        lambda e: e.sender == BOT and f'LINE group "Family office {tag}"' in e.content.get("body", ""),
        30,
        "the portal of the group",
    )
    room = added.room_id
    await line(stack, "POST", f"/groups/{gid}/messages", {"from": aiko, "text": f"hi from Aiko {tag}"})
    await line(stack, "POST", f"/groups/{gid}/messages", {"from": bo, "text": f"hi from Bo {tag}"})
    from_aiko = await employee.wait_for_message(f"hi from Aiko {tag}", sender=ghost(stack, ids["Aiko Arai"]))
    from_bo = await employee.wait_for_message(f"hi from Bo {tag}", sender=ghost(stack, ids["Bo Berg"]))
    assert from_aiko.room_id == from_bo.room_id == room  # one portal for the group
    for name, user_id in ids.items():
        # The group member profile endpoint names them (they need not be friends).
        assert (await employee.client.get_displayname(ghost(stack, user_id))).displayname == f"{name} (LINE)"

    def membership(user: str, state: str) -> Callable[[SeenEvent], bool]:
        return lambda e: (
            e.room_id == room
            and e.type == "m.room.member"
            and e.sender == user
            and e.content.get("membership") == state
        )

    joined = await line(stack, "POST", f"/groups/{gid}/members", {"user": cho, "displayName": "Cho Chen"})
    cho_id = next(m["userId"] for m in joined["members"] if m["displayName"] == "Cho Chen")
    cho_ghost = ghost(stack, cho_id)
    entered = await employee.wait_for_event(membership(cho_ghost, "join"), 30, "the newcomer's ghost joining")
    assert entered.content.get("displayname") == "Cho Chen (LINE)"
    await line(stack, "DELETE", f"/groups/{gid}/members/{cho}")
    await employee.wait_for_event(membership(cho_ghost, "leave"), 30, "the newcomer's ghost leaving")
    # The others stay.
    members = (await employee.client.joined_members(room)).members
    present = {m.user_id for m in members}
    assert ghost(stack, ids["Aiko Arai"]) in present and ghost(stack, ids["Bo Berg"]) in present
    assert cho_ghost not in present


async def test_a_clients_profile_picture_is_their_ghosts_avatar(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    pia = new_client(stack, "Pia Picture")
    await pia.set_picture(PNG)
    await open_portal(stack, employee, pia, "hello, this is my face")
    pia_ghost = ghost(stack, pia.user_id)
    face = await avatar(employee, pia_ghost)
    assert face is not None and await download(employee, face) == PNG
    await bridge.wait_for_log(f"event=ghost_picture user={pia_ghost}")
    # The same picture is not fetched again for every message.
    await pia.say("and a second message")
    await employee.wait_for_message("and a second message", sender=pia_ghost)
    assert (await pia.picture())["fetches"] == 1
    assert await avatar(employee, pia_ghost) == face

    # Without a picture on LINE the ghost has no avatar, and the message arrives all the same.
    nora = new_client(stack, "Nora Plain")
    await open_portal(stack, employee, nora, "no picture on my profile")
    assert await avatar(employee, ghost(stack, nora.user_id)) is None

    # A picture LINE's CDN will not serve costs the message nothing; the log says why, without
    # the picture's address.
    bea = new_client(stack, "Bea Broken")
    broken = await bea.set_picture(PNG, status=500)
    await open_portal(stack, employee, bea, "my picture does not load")
    bea_ghost = ghost(stack, bea.user_id)
    assert await avatar(employee, bea_ghost) is None
    failed = await bridge.wait_for_log(f"event=ghost_picture_failed user={bea_ghost}")
    assert "network=line" in failed and "HTTP 500" in failed
    assert broken["pictureUrl"].rsplit("/", 1)[-1] not in bridge.output
    assert (await bea.picture())["fetches"] == 1


async def test_a_changed_picture_is_the_new_avatar_and_a_broken_one_is_tried_again_later(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee
) -> None:
    proc = await own_bridge(clock=True)
    kai = new_client(stack, "Kai Change")
    await kai.set_picture(PNG)
    room, _ = await open_portal(stack, employee, kai, "my first picture")
    kai_ghost = ghost(stack, kai.user_id)
    first = await avatar(employee, kai_ghost)
    assert first is not None and await download(employee, first) == PNG

    # A broken picture is not fetched again for every message, only after ten minutes.
    bea = new_client(stack, "Bea Retry")
    await bea.set_picture(status=503)
    bea_room, _ = await open_portal(stack, employee, bea, "my picture is broken today")
    bea_ghost = ghost(stack, bea.user_id)
    await proc.wait_for_log(f"event=ghost_picture_failed user={bea_ghost}")
    mended = await bea.mend_picture()
    await bea.say("still broken?")
    await employee.wait_for_message("still broken?", bea_room)
    assert (await bea.picture())["fetches"] == 1 and await avatar(employee, bea_ghost) is None
    proc.advance(11 * 60)
    await bea.say("ten minutes later")
    await employee.wait_for_message("ten minutes later", bea_room)
    bea_face = await avatar(employee, bea_ghost)
    assert bea_face is not None and sha256(await download(employee, bea_face)) == mended["sha256"]
    assert (await bea.picture())["fetches"] == 2

    # Kai changes their picture. LINE says so to no one; the connector learns it at its next
    # profile look-up (it keeps profiles for a day, a restart starts afresh).
    changed = await kai.set_picture()
    assert await proc.stop() == 0
    proc = await own_bridge()
    await kai.say("my new picture")
    await employee.wait_for_message("my new picture", room)
    second = await avatar(employee, kai_ghost)
    assert second is not None and second != first
    assert sha256(await download(employee, second)) == changed["sha256"]
    # Bea's is unchanged: the store remembers it across the restart, so it is not fetched again.
    await bea.say("after the restart")
    await employee.wait_for_message("after the restart", bea_room)
    assert (await bea.picture())["fetches"] == 2
    assert await avatar(employee, bea_ghost) == bea_face


async def test_outbound_text_image_location_and_what_line_cannot_take(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client = new_client(stack, "Sora Outbound")
    room, _ = await open_portal(stack, employee, client, "send me the chart please")
    first = employee.messages(room, body="send me the chart please")[0]

    await employee.send_text(room, "Here it comes")
    got = await client.wait_for_text("Here it comes")
    assert text_of(got) == f"{SIGNATURE}\nHere it comes" and got["via"] == "push"

    mxc = await upload(employee, PNG, "image/png", "chart.png")
    await employee.send_event(
        room,
        "m.room.message",
        {
            "msgtype": "m.image",
            "body": "chart.png",
            "filename": "chart.png",
            "url": mxc,
            "info": {"mimetype": "image/png", "size": len(PNG)},
        },
    )
    # LINE takes pictures by URL only: the client's app fetched the bridge's media URL.
    image = await client.wait_for(lambda v: v["type"] == "image", "the picture")
    assert image["display"] == "shown", image
    fetched = image["media"]["original"]
    assert fetched["state"] == "fetched" and fetched["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert fetched["url"] == image["message"]["originalContentUrl"]
    bridge_cfg = stack.config.network("line")
    assert bridge_cfg is not None and fetched["url"].startswith(bridge_cfg.media_base + "/")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{client.base}/client/{client.alias}/media/{image['id']}/original") as resp:
            assert resp.status == 200 and await resp.read() == PNG

    pdf = await upload(employee, PDF, "application/pdf", "terms.pdf")
    refused = await employee.send_event(
        room,
        "m.room.message",
        {"msgtype": "m.file", "body": "terms.pdf", "url": pdf, "info": {"mimetype": "application/pdf"}},
    )
    notice = await employee.wait_for_event(bot_notice_about(room, refused), 30, "the file refusal")
    assert "a LINE bot cannot send files" in notice.content["body"]

    reaction = await employee.send_event(
        room,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": first.event_id, "key": "👍"}},
    )
    explained = await employee.wait_for_event(bot_notice_about(room, reaction), 30, "the reaction notice")
    assert "LINE does not let an official account react" in explained.content["body"]

    await employee.send_event(
        room, "m.room.message", {"msgtype": "m.location", "body": "Office", "geo_uri": "geo:52.52,13.405"}
    )
    place = await client.wait_for(lambda v: v["type"] == "location", "the location")
    assert (place["message"]["latitude"], place["message"]["longitude"]) == (52.52, 13.405)

    # Neither the file nor the reaction reached the client.
    inbox = await client.inbox()
    assert [v["type"] for v in inbox if v["type"] != "text"] == ["image", "location"]


async def test_a_fresh_reply_token_is_used_then_a_push_after_its_minute(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee
) -> None:
    assert stack.line is not None
    # No disclaimer: the employee's first answer is the one that may use the reply token.
    await own_bridge(policy=lambda rules: rules.pop("disclaimers"))
    client = new_client(stack, "Yui Reply")
    room, _ = await open_portal(stack, employee, client, "can you call me?", disclaimer=False)

    before = await usage(stack)
    await employee.send_text(room, "Of course, at three")
    got = await client.wait_for_text("Of course, at three")
    assert got["via"] == "reply"
    assert await usage(stack) == before  # replies are free

    await client.say("thanks, and one more thing")
    await employee.wait_for_message("thanks, and one more thing", room)
    # LINE's minute for that reply token passes (the bridge's own clock does not: it still
    # tries the reply, LINE refuses the token, and the answer goes as a push).
    await line(stack, "POST", "/control/clock", {"advance_seconds": 61})
    await employee.send_text(room, "Sure, go ahead")
    late = await client.wait_for_text("Sure, go ahead")
    assert late["via"] == "push"
    assert await usage(stack) == before + 1
    assert [v["via"] for v in await client.inbox()] == ["reply", "push"]


async def test_the_monthly_quota_refuses_before_sending_and_nothing_is_lost(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client = new_client(stack, "Haru Quota")
    room, _ = await open_portal(stack, employee, client, "what does it cost?")
    used = await usage(stack)
    await line(stack, "POST", "/control/quota", {"limit": used})
    try:
        over = await employee.send_text(room, "our fees are listed here")
        notice = await employee.wait_for_event(bot_notice_about(room, over), 30, "the quota refusal")
        body = notice.content["body"]
        # The bridge's own check, before any push: the figures it read from LINE.
        assert "monthly message limit is reached" in body and f"{used} of {used} messages" in body, body
        outbox = (await line(stack, "GET", "/control/outbox"))["messages"]
        assert not [m for m in outbox if "our fees are listed here" in text_of(m)]
        assert await usage(stack) == used

        # An admin raises the limit: the next message goes.
        await line(stack, "POST", "/control/quota", {"limit": used + 10})
        await employee.send_text(room, "the fees, once more")
        got = await client.wait_for_text("the fees, once more")
        assert got["via"] == "push"
        assert await usage(stack) == used + 1
        assert "our fees are listed here" not in json.dumps(await client.inbox())
    finally:
        await line(stack, "POST", "/control/quota", {"limit": None})


async def test_forged_signatures_are_refused(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    assert stack.line is not None
    client = new_client(stack, "Ren Forgery")
    room, _ = await open_portal(stack, employee, client, "hello, this is really me")
    forged_event = {
        "type": "message",
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": client.user_id},
        "webhookEventId": "01J" + secrets.token_hex(12).upper()[:23],
        "deliveryContext": {"isRedelivery": False},
        "message": {"id": str(secrets.randbelow(10**17) + 10**17), "type": "text", "text": "forged message"},
    }
    other_secret = base64.b64encode(hashlib.sha256(b"not the channel secret").digest()).decode()
    for forgery in ({"signature": "forged"}, {"sign": False}, {"signature": other_secret}):
        answer = await line(stack, "POST", "/control/events", {"events": [forged_event], **forgery})
        assert answer["status"] == 403, (forgery, answer)
    assert "event=line_webhook_refused reason=bad_signature" in bridge.output

    await client.say("and this is me again")
    await employee.wait_for_message("and this is me again", room)
    assert not employee.messages(room, body="forged message")


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT
)
#: Any JSON value.
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_ROOM = "R" + "a" * 32
_MESSAGE_IDS = st.sampled_from(["100000000000000001", "100000000000000002"]) | st.integers(
    10**17, 10**18
).map(str)
#: Mostly new webhook event ids, sometimes one seen before (a redelivery, or a clash).
_EVENT_IDS = st.integers(0, 4).flatmap(
    lambda i: (
        st.just("01HXHOSTILE000000000000001")
        if i == 0
        else st.text("0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=26, max_size=26)
    )
)
_KINDS = ["message"] * 4 + ["unsend", "follow", "unfollow", "join", "leave", "memberJoined", "memberLeft"]
_REPLYABLE = ("message", "follow", "join", "memberJoined")


@st.composite
def _line_message(draw: st.DrawFn) -> dict[str, Any]:
    """A message object as LINE's webhook has it, of any type."""
    kind = draw(st.sampled_from(["text", "text", "image", "video", "audio", "file", "location", "sticker"]))
    message: dict[str, Any] = {"id": draw(_MESSAGE_IDS), "type": kind}
    if kind in ("text", "image", "video", "sticker"):
        message["quoteToken"] = draw(_TEXT)
    span = st.fixed_dictionaries({"index": st.integers(-2, 400), "length": st.integers(-1, 400)})
    if kind == "text":
        message["text"] = draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=300))
        if draw(st.booleans()):
            message["emojis"] = draw(st.lists(span.map(lambda s: {**s, "productId": "p", "emojiId": "001"})))
        if draw(st.booleans()):
            mentionee = span.map(lambda s: {**s, "type": "user", "userId": "U" + "c" * 32, "isSelf": False})
            message["mention"] = {"mentionees": draw(st.lists(mentionee, max_size=3))}
    elif kind in ("image", "video", "audio"):
        message["contentProvider"] = {"type": "line"}
        message["duration"] = draw(st.integers(0, 10**7))
    elif kind == "file":
        message["fileName"], message["fileSize"] = draw(_TEXT), draw(st.integers(0, 10**9))
    elif kind == "location":
        message["title"], message["address"] = draw(_TEXT), draw(_TEXT)
        message["latitude"] = draw(st.floats(-90, 90))
        message["longitude"] = draw(st.floats(-180, 180))
    else:
        message["packageId"], message["stickerId"] = draw(_TEXT), draw(_TEXT)
        message["stickerResourceType"] = "STATIC"
        message["keywords"] = draw(st.lists(_TEXT, max_size=20))
    if kind in ("text", "sticker") and draw(st.booleans()):
        message["quotedMessageId"] = draw(_MESSAGE_IDS)
    return message


@st.composite
def _line_event(draw: st.DrawFn, user: str, group: str) -> dict[str, Any]:
    """A well-formed LINE webhook event in one of two known chats (so the valid ones make few
    portals), then broken in up to three places: a key dropped, a value of the wrong type, a
    key LINE never sends."""
    kind = draw(st.sampled_from(_KINDS))
    if kind in ("follow", "unfollow"):
        chat = "user"
    elif kind in ("message", "unsend"):
        chat = draw(st.sampled_from(["user", "group", "room"]))
    else:
        chat = draw(st.sampled_from(["group", "room"]))
    source: dict[str, Any] = {
        "user": {"type": "user", "userId": user},
        "group": {"type": "group", "groupId": group},
        "room": {"type": "room", "roomId": _ROOM},
    }[chat]
    if chat != "user" and kind in ("message", "unsend"):
        source["userId"] = user
    event: dict[str, Any] = {
        "type": kind,
        "mode": "active",
        "timestamp": draw(st.integers(1, 2**42)),
        "source": source,
        "webhookEventId": draw(_EVENT_IDS),
        "deliveryContext": {"isRedelivery": draw(st.booleans())},
    }
    if kind in _REPLYABLE:
        event["replyToken"] = draw(_TEXT)
    if kind == "message":
        event["message"] = draw(_line_message())
    elif kind == "unsend":
        event["unsend"] = {"messageId": draw(_MESSAGE_IDS)}
    elif kind in ("memberJoined", "memberLeft"):
        members = st.lists(
            st.sampled_from([user, "U" + "b" * 32]).map(lambda u: {"type": "user", "userId": u})
        )
        event["joined" if kind == "memberJoined" else "left"] = {"members": draw(members)}
    elif kind == "follow":
        event["follow"] = {"isUnblocked": draw(st.booleans())}
    for _ in range(draw(st.integers(0, 3))):
        places = [event, *(v for v in (event.get("source"), event.get("message")) if isinstance(v, dict))]
        place = draw(st.sampled_from(places))
        how = draw(st.sampled_from(["drop", "retype", "add"]))
        if how == "drop" and place:
            del place[draw(st.sampled_from(sorted(place)))]
        elif how == "retype" and place:
            place[draw(st.sampled_from(sorted(place)))] = draw(_JSON)
        else:
            place[draw(_TEXT)] = draw(_JSON)
    return event


@st.composite
def _hostile_body(draw: st.DrawFn, bot: str, user: str, group: str) -> str:
    """A webhook body a broken or hostile sender could sign: mostly LINE payloads for this account
    (so they reach the translator and the core) made of :func:`_line_event`; else arbitrary JSON,
    arbitrary text, or a payload cut short."""
    kind = draw(st.sampled_from(["line"] * 6 + ["json", "text", "cut"]))
    if kind == "text":
        return draw(_TEXT)
    if kind == "json":
        return json.dumps(draw(_JSON))
    events = draw(st.lists(_line_event(user, group) | _JSON, min_size=1, max_size=3))
    destination = draw(st.sampled_from([bot] * 5 + ["U" + "0" * 32]))
    body = json.dumps({"destination": destination, "events": events}, ensure_ascii=draw(st.booleans()))
    if kind == "cut":
        body = body[: draw(st.integers(0, len(body) - 1))]
    return body


def hostile_examples(bot: str, user: str, group: str, n: int = 80) -> list[str]:
    """Up to ``n`` distinct bodies drawn by Hypothesis (its first ones are its simplest: "", "0", {}...)."""
    bodies: list[str] = []

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=_hostile_body(bot, user, group))
    def collect(body: str) -> None:
        bodies.append(body)

    collect()
    return list(dict.fromkeys(bodies))  # Hypothesis mutates its examples: some come twice


async def test_hostile_signed_payloads_never_crash_the_listener(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    assert stack.line is not None
    bot = stack.line.bot_user_id
    user = "U" + hashlib.md5(b"hostile-line-user").hexdigest()
    group = "C" + hashlib.md5(b"hostile-line-group").hexdigest()
    fixed = [
        ("", 400),
        ("[]", 400),
        ('{"events": 1}', 400),
        (json.dumps({"destination": bot, "events": [1, None, {"type": "message"}]}), 200),
        (json.dumps({"destination": "U" + "1" * 32, "events": []}), 200),
    ]
    # One bridge for all of them: the point is that the same listener survives every one.
    for body, expected in [*fixed, *((b, None) for b in hostile_examples(bot, user, group))]:
        answer = await line(stack, "POST", "/control/events", {"body": body})
        # Signed correctly, so never 403; whatever it holds, answered, and below 500 (a 500
        # makes LINE deliver the same body again and again).
        assert answer["result"] != "timeout" and 200 <= answer["status"] < 500, (answer, body)
        assert expected is None or answer["status"] == expected, (answer, body)
        assert bridge.proc is not None and bridge.proc.returncode is None, body
    assert "event=line_webhook_failed" not in bridge.output
    # ...and still bridges a real conversation, both ways.
    client = new_client(stack, "Aoi Survivor")
    room, _ = await open_portal(stack, employee, client, "still there?")
    await employee.send_text(room, "yes, still here")
    await client.wait_for_text("yes, still here")


async def test_a_redelivered_event_is_not_posted_twice(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client = new_client(stack, "Nao Redelivery")
    room, sent = await open_portal(stack, employee, client, "only once, please")
    event_id = sent["webhookEventId"]

    async def redelivered(since: int) -> bool:
        log = await line(stack, "GET", "/control/deliveries?payloads=0")
        return any(
            d["index"] > since
            and d["isRedelivery"]
            and event_id in d["webhookEventIds"]
            and d["status"] == 200
            for d in log["deliveries"]
        )

    for restart in (False, True):
        if restart:
            # A new process: the event is known from the store's message map, not from memory.
            assert await bridge.stop() == 0
            await bridge.start()
            await stack.connect_whatsapp()
        since = len((await line(stack, "GET", "/control/deliveries?payloads=0"))["deliveries"])
        assert (await line(stack, "POST", "/control/redeliver", {"webhookEventIds": [event_id]}))[
            "redelivered"
        ] == 1
        await eventually(lambda: redelivered(since), "the redelivery to be answered 200")
        assert len(employee.messages(room, body="only once, please")) == 1
        # Recognised by the connector's memory of handled events, and after the restart by the
        # core's message map.
        assert ("event=inbound_duplicate" if restart else "event=line_event_skipped reason=handled") in (
            bridge.output
        )
    await client.say("after the redeliveries")
    await employee.wait_for_message("after the redeliveries", room)
    assert len(employee.messages(room, body="only once, please")) == 1
    # Nor was the disclaimer sent again.
    assert len([v for v in await client.inbox() if DISCLAIMER in text_of(v)]) == 1


async def test_push_errors_are_retried_in_order_and_a_lost_answer_sends_once(
    stack: DevStack, bridge: BridgeProcess, employee: Employee
) -> None:
    client = new_client(stack, "Taro Retry")
    room, _ = await open_portal(stack, employee, client, "are you there?")
    try:
        # A 429 (wait and retry), then server errors: every message arrives once, in order.
        await line(stack, "POST", "/control/faults", {"count": 1, "endpoint": PUSH, "status": 429})
        await employee.send_text(room, "first, after the 429")
        await employee.send_text(room, "second, behind the first")
        await client.wait_for_text("second, behind the first", timeout=60)
        assert await faults_left(stack) == 0  # the 429 was answered, and the push retried
        await line(stack, "POST", "/control/faults", {"count": 2, "endpoint": PUSH, "status": 500})
        await employee.send_text(room, "third, after two 500s")
        await employee.send_text(room, "fourth, behind the third")
        await client.wait_for_text("fourth, behind the third", timeout=60)
        assert await faults_left(stack) == 0
        assert bridge.output.count("event=outbound_retry") >= 3
        texts = [
            text_of(v).removeprefix(f"{SIGNATURE}\n") for v in await client.inbox() if v["via"] == "push"
        ]
        assert texts == [
            "first, after the 429",
            "second, behind the first",
            "third, after two 500s",
            "fourth, behind the third",
        ]

        # LINE sends the push but its answer is lost: the retry carries the same retry key, LINE
        # answers 409 with what the first request became, and the client has it once.
        used = await usage(stack)
        await line(
            stack, "POST", "/control/faults", {"count": 1, "endpoint": PUSH, "status": 500, "after": True}
        )
        await employee.send_text(room, "exactly once")
        await client.wait_for_text("exactly once")
        await bridge.wait_for_log("event=line_push_settled")
        await employee.send_text(room, "and the next one")
        await client.wait_for_text("and the next one")
        inbox = await client.inbox()
        assert len([v for v in inbox if "exactly once" in text_of(v)]) == 1
        outbox = (await line(stack, "GET", "/control/outbox"))["messages"]
        assert len([m for m in outbox if "exactly once" in text_of(m)]) == 1
        assert await usage(stack) == used + 2
        notices = [e for e in employee.events if e.room_id == room and e.sender == BOT]
        assert not [e for e in notices if "Not delivered" in e.content.get("body", "")]
    finally:
        await line(stack, "POST", "/control/faults", {"count": 0})
