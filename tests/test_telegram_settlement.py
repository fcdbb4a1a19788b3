"""Crash settlement on Telegram, the connector's side: the checkpoint it hands the core before a
send is where it later looks for what that send became. The core stores the checkpoint as text
and never reads it; the connector takes it back, asks the record which ids it maps, and probes
the ones after it.

Against the sandbox through python-telegram-bot's real HTTP stack, with the record on SQLite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridge.events import ChatRef, Delivery, DeliveryKind, RichText
from bridge.networks.spec import MappedIds
from bridge.networks.telegram.config import TelegramConfig
from bridge.networks.telegram.connector import TelegramConnector
from bridge.store import MessageLink, Store
from sandbox.telegram import TelegramSandbox

CLIENT_ID = 515151
ROOM = "!settle:localhost"


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[TelegramSandbox]:
    sb = TelegramSandbox(host="127.0.0.1", port=0, token=None, rate_limits=False)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite:{tmp_path / 'store.db'}")
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


def _config(sandbox: TelegramSandbox) -> TelegramConfig:
    return TelegramConfig(
        bot_token=sandbox.token,
        polling_timeout=1,
        base_url=f"{sandbox.url}/bot",
        base_file_url=f"{sandbox.url}/file/bot",
        pacing=False,
    )


@pytest.fixture
async def connector(sandbox: TelegramSandbox, store: Store) -> AsyncIterator[TelegramConnector]:
    mapped = MappedIds(highest_numeric=store.highest_numeric_remote_id, of_chat=store.remote_ids_of_chat)
    connector = TelegramConnector(_config(sandbox), mapped_ids=mapped)
    await connector.bot.initialize()  # getMe; no polling: the test is the core
    try:
        yield connector
    finally:
        await connector.bot.shutdown()


async def _client_says(sandbox: TelegramSandbox, text: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sandbox.url}/client/{CLIENT_ID}/messages", json={"text": text, "first_name": "Ada"}
        ) as response:
            assert response.status == 200, await response.text()
            return str((await response.json())["message_id"])


def _link(chat: ChatRef, remote_id: str, event_id: str, direction: str) -> MessageLink:
    return MessageLink(chat.network, chat.account, chat.chat_id, remote_id, ROOM, event_id, direction)


def _answer(chat: ChatRef, event_id: str, text: str) -> Delivery:
    return Delivery(DeliveryKind.MESSAGE, chat, ROOM, event_id, text=RichText(text))


async def test_a_send_interrupted_before_its_mapping_is_found_after_its_checkpoint(
    sandbox: TelegramSandbox, store: Store, connector: TelegramConnector
) -> None:
    chat = ChatRef("telegram", str(connector.bot.id), str(CLIENT_ID))
    question = await _client_says(sandbox, "is my transfer through?")
    await store.add_message(_link(chat, question, "$question", "in"))
    # Ids the connector made up for other events share the chat's record; they are not messages.
    await store.add_message(_link(chat, f"{question}/edit/1700000000", "$edit", "in"))

    checkpoint = await connector.checkpoint(chat)
    assert checkpoint == question

    answer = _answer(chat, "$answer", "yes, this morning")
    sent = await connector.send(answer)  # ... and the bridge stops before record_delivery
    assert await connector.find_delivered(answer, checkpoint) == sent

    # Once mapped, the same id is not taken for the next interrupted send, which never went out.
    await store.record_delivery("$answer", [_link(chat, sent.message_ids[0], "$answer", "out")])
    assert await connector.checkpoint(chat) == sent.message_ids[0]
    assert await connector.find_delivered(_answer(chat, "$later", "anything else?"), checkpoint) is None


async def test_without_the_record_or_with_a_checkpoint_it_did_not_make_it_cannot_tell(
    sandbox: TelegramSandbox, connector: TelegramConnector
) -> None:
    chat = ChatRef("telegram", str(connector.bot.id), str(CLIENT_ID))
    answer = _answer(chat, "$blind", "hello")
    assert await connector.find_delivered(answer, "") is None
    assert await connector.find_delivered(answer, "not a number") is None

    blind = TelegramConnector(_config(sandbox))
    assert await blind.checkpoint(chat) == ""
    assert await blind.find_delivered(answer, "1") is None


async def test_the_record_is_asked_once_per_chat_and_later_sends_keep_the_checkpoint_current(
    sandbox: TelegramSandbox, store: Store
) -> None:
    """The record's MAX reads every mapped row of the chat, and a checkpoint is taken before
    every send: asked once, then the connector's own sends move it up."""
    asked: list[ChatRef] = []

    async def highest(chat: ChatRef) -> int:
        asked.append(chat)
        return await store.highest_numeric_remote_id(chat)

    connector = TelegramConnector(
        _config(sandbox), mapped_ids=MappedIds(highest_numeric=highest, of_chat=store.remote_ids_of_chat)
    )
    await connector.bot.initialize()
    try:
        chat = ChatRef("telegram", str(connector.bot.id), str(CLIENT_ID))
        question = await _client_says(sandbox, "one more question")
        await store.add_message(_link(chat, question, "$q2", "in"))
        assert await connector.checkpoint(chat) == question
        first = await connector.send(_answer(chat, "$a2", "go ahead"))
        assert await connector.checkpoint(chat) == first.message_ids[0]
        second = await connector.send(_answer(chat, "$a3", "anything else?"))
        assert await connector.checkpoint(chat) == second.message_ids[0]
        assert asked == [chat]
        # A checkpoint below a client's later message is still one settlement can use: the
        # client's id is mapped, so only the interrupted send's id is taken.
        later = await _client_says(sandbox, "and a last one")
        await store.add_message(_link(chat, later, "$q3", "in"))
        checkpoint = await connector.checkpoint(chat)
        interrupted = _answer(chat, "$a4", "sure")
        sent = await connector.send(interrupted)
        assert int(checkpoint) < int(later) < int(sent.message_ids[0])
        assert await connector.find_delivered(interrupted, checkpoint) == sent
    finally:
        await connector.bot.shutdown()
