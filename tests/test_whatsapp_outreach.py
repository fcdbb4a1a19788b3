"""WhatsApp outreach, the network side: the company writes first with an approved template.

The real connector against the real sandbox (in-process, on loopback ports): the typed number
becomes the chat the client's own messages arrive in, the template is checked against the
account's list through the Graph API before anything is created, and free text to a client who
never wrote is refused by the 24-hour window check before it reaches WhatsApp. Every wait is on
a condition, bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.events import ChatRef, Delivery, DeliveryKind, RemoteEvent, RemoteEventKind, RichText
from bridge.networks.base import DeliveryError, OnSent, OutreachError, TemplateOutreach
from bridge.networks.whatsapp.config import WhatsAppConfig, WhatsAppNumber
from bridge.networks.whatsapp.connector import WhatsAppConnector
from bridge.store import MessageLink, Store
from sandbox.homeserver import free_port
from sandbox.whatsapp import SandboxNumber, Template, WhatsAppSandbox, default_templates
from sandbox.whatsapp.client import WhatsAppClient

BOUND = 5.0
TOKEN = "EAAsandbox-outreach-token-0123456789"
SECRET = "outreach-app-secret-0123456789"
VERIFY = "outreach-verify-token-0123456789"
WABA = "2001"
SALES = SandboxNumber("1001", "+1 555 0100", "Example Advisers Sales")
SUPPORT = SandboxNumber("1002", "+1 555 0200", "Example Advisers Support")
NUMBERS = (WhatsAppNumber("1001", TOKEN, WABA, "Sales"), WhatsAppNumber("1002", TOKEN, WABA, "Support"))
CLIENT = "4915551234567"
FOLLOW_UP_TEXT = (
    "Hello {{1}}, we are following up on your recent message. Reply to continue the conversation."
)
#: Beside the shipped ones (follow_up, appointment_reminder, conversation_reopen approved,
#: spring_promo rejected): one per other status, a second language, header parameters.
EXTRA_TEMPLATES = [
    Template("follow_up", "de", "Hallo {{1}}, wir melden uns zu Ihrer Nachricht.", id="910000000000001"),
    Template("order_update", "en", "Your order {{1}} has shipped.", status="PENDING", id="910000000000002"),
    Template(
        "old_offer", "en", "Our offer for {{1}}.", status="PAUSED", category="MARKETING", id="910000000000003"
    ),
    Template("retired", "en", "This service ends on {{1}}.", status="DISABLED", id="910000000000004"),
    Template("launch_notice", "en", "We are open from {{1}}.", status="PENDING", id="910000000000005"),
    Template(
        "welcome_offer", "en", "We have an offer for you, {{1}}.", header="Hi {{1}}", id="910000000000006"
    ),
]


def wa_config(graph_url: str, numbers: tuple[WhatsAppNumber, ...] = NUMBERS) -> WhatsAppConfig:
    return WhatsAppConfig(
        graph_url=graph_url,
        app_secret=SECRET,
        verify_token=VERIFY,
        listen_host="127.0.0.1",
        listen_port=0,
        path="/whatsapp/webhook",
        public_url="",
        numbers=numbers,
    )


class Inbound:
    """Plays the core's inbound pipeline: records what the connector hands over."""

    def __init__(self) -> None:
        self.events: list[RemoteEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: RemoteEvent, *, on_sent: OnSent | None = None) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, pick: Callable[[RemoteEvent], bool]) -> RemoteEvent:
        async def loop() -> RemoteEvent:
            while True:
                self._changed.clear()
                found = next((e for e in self.events if pick(e)), None)
                if found is not None:
                    return found
                await self._changed.wait()

        return await asyncio.wait_for(loop(), BOUND)


@dataclasses.dataclass
class Stack:
    sandbox: WhatsAppSandbox
    connector: WhatsAppConnector
    inbound: Inbound
    store: Store


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The sandbox with two company numbers, and a connector whose webhook it delivers to and
    whose record (for the window) is a real store."""
    sandbox = WhatsAppSandbox(
        TOKEN, SECRET, [SALES, SUPPORT], waba_id=WABA, templates=[*default_templates(), *EXTRA_TEMPLATES]
    )
    await sandbox.start()
    store = Store(f"sqlite:{tmp_path_factory.mktemp('outreach') / 'houseline.db'}")
    await store.start()
    inbound = Inbound()
    connector = WhatsAppConnector(wa_config(sandbox.graph_url), last_inbound=store.last_inbound_at)
    await connector.start(inbound)
    try:
        await sandbox.subscribe(f"http://127.0.0.1:{connector.webhook_port}/whatsapp/webhook", VERIFY)
        yield Stack(sandbox, connector, inbound, store)
    finally:
        await connector.stop()
        await store.stop()
        await sandbox.stop()


@pytest.fixture
async def spare(stack: Stack) -> AsyncIterator[WhatsAppConnector]:
    """A second connector on the same sandbox, with nothing cached yet."""
    connector = WhatsAppConnector(wa_config(stack.sandbox.graph_url))
    await connector.start(Inbound())
    try:
        yield connector
    finally:
        await connector.stop()


async def control(
    sandbox: WhatsAppSandbox, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as http:
        async with http.request(method, f"{sandbox.url}{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def refused(call: Any) -> str:
    with pytest.raises(OutreachError) as caught:
        await call
    return caught.value.reason


def refused_now(call: Callable[[], Any]) -> str:
    with pytest.raises(OutreachError) as caught:
        call()
    return caught.value.reason


def test_the_connector_offers_template_outreach(stack: Stack) -> None:
    assert isinstance(stack.connector, TemplateOutreach)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "typed",
    [
        "+49 155 5123 4567",
        "0049-155-51234567",
        "(49) 1555.1234567",
        "4915551234567",
        "+49 (0)155 51234567",
        "+49\u00a0155\u201351234567",
        "  +4915551234567  ",
    ],
)
def test_usual_spellings_become_the_wa_id(stack: Stack, typed: str) -> None:
    chat, name = stack.connector.outreach_chat(typed, None)
    assert chat == ChatRef("whatsapp", "1001", CLIENT)
    assert name == "+4915551234567"


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        (
            "0155 123",
            "“0155 123” is not a phone number WhatsApp can reach: write it with the country code, e.g. +49 155 51234567.",
        ),
        (
            "0155 51234567",
            "“0155 51234567” is not a phone number WhatsApp can reach: write it with the country code, e.g. +49 155 51234567.",
        ),
        (
            "+0155 51234567",
            "“+0155 51234567” is not a phone number WhatsApp can reach: write it with the country code, e.g. +49 155 51234567.",
        ),
        (
            "Anna Weber",
            "“Anna Weber” is not a phone number WhatsApp can reach: use only digits, spaces, dashes, dots and parentheses, "
            "with the country code, e.g. +49 155 51234567.",
        ),
        (
            "+49 155 CALL-NOW",
            "“+49 155 CALL-NOW” is not a phone number WhatsApp can reach: use only digits, spaces, dashes, dots and "
            "parentheses, with the country code, e.g. +49 155 51234567.",
        ),
        (
            "+49 12",
            "“+49 12” is not a phone number WhatsApp can reach: it has 4 digits, and a number with its country code has "
            "5 to 15, e.g. +49 155 51234567.",
        ),
        (
            "+49 155 5123 4567 8901",
            "“+49 155 5123 4567 8901” is not a phone number WhatsApp can reach: it has 17 digits, and a number "
            "with its country code has 5 to 15, e.g. +49 155 51234567.",
        ),
        (
            "",
            "No phone number given: write the client's number with the country code, e.g. +49 155 51234567.",
        ),
        (
            "   ",
            "No phone number given: write the client's number with the country code, e.g. +49 155 51234567.",
        ),
    ],
)
def test_numbers_whatsapp_cannot_reach_are_refused_with_how_to_write_them(
    stack: Stack, typed: str, reason: str
) -> None:
    assert refused_now(lambda: stack.connector.outreach_chat(typed, None)) == reason


def test_what_is_typed_is_echoed_on_one_line_and_short(stack: Stack) -> None:
    reason = refused_now(lambda: stack.connector.outreach_chat("call\nme " + "x" * 100, None))
    assert "\n" not in reason and reason.startswith("“callme xxx") and "…”" in reason


def test_what_the_connector_accepts_whatsapp_accepts(stack: Stack) -> None:
    """The sandbox validates ``to`` as Graph does: every accepted spelling's wa_id is valid."""
    for typed in ("+1 234 5", "+123 456 789 012 345"):
        chat, _ = stack.connector.outreach_chat(typed, None)
        assert 5 <= len(chat.chat_id) <= 15 and chat.chat_id.isdigit()


@pytest.mark.parametrize(
    ("typed", "own"),
    [("+1 555 0100", "Sales (+15550100, id 1001)"), ("+1 (555) 0200", "Support (+15550200, id 1002)")],
)
def test_the_companys_own_numbers_are_refused(stack: Stack, typed: str, own: str) -> None:
    digits = "".join(c for c in typed if c.isdigit())
    assert refused_now(lambda: stack.connector.outreach_chat(typed, None)) == (
        f"+{digits} is the company's own WhatsApp number {own}: write to a client's number."
    )


async def test_whatsapp_refuses_a_number_writing_to_itself_too(stack: Stack) -> None:
    """Why the check exists: the sandbox answers 131021, like Meta."""
    with pytest.raises(DeliveryError) as caught:
        await stack.connector.send(
            Delivery(
                DeliveryKind.TEMPLATE,
                ChatRef("whatsapp", "1001", "15550100"),
                "!r:l",
                "$own",
                template="conversation_reopen",
            )
        )
    assert caught.value.permanent and "own number" in caught.value.reason


# --------------------------------------------------------------------------- company numbers


@pytest.mark.parametrize(
    ("wanted", "account"),
    [
        (None, "1001"),
        ("", "1001"),
        ("1002", "1002"),
        ("support", "1002"),
        ("SALES", "1001"),
        ("+1 555 0200", "1002"),
    ],
)
def test_from_picks_the_company_number_by_id_name_or_phone(
    stack: Stack, wanted: str | None, account: str
) -> None:
    chat, _ = stack.connector.outreach_chat("+49 155 5123 4567", wanted)
    assert chat == ChatRef("whatsapp", account, CLIENT)


def test_an_unknown_company_number_is_refused_with_the_configured_ones(stack: Stack) -> None:
    assert refused_now(lambda: stack.connector.outreach_chat("+49 155 5123 4567", "marketing")) == (
        "“marketing” is not one of the company's WhatsApp numbers; the configured ones are: "
        "Sales (+15550100, id 1001); Support (+15550200, id 1002)."
    )


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("account", "name", "language", "params"),
    [
        ("1001", "follow_up", "", ("Ms Weber",)),
        ("1001", "follow_up", "en", ("Ms Weber",)),
        ("1002", "follow_up", "de", ("Frau Weber",)),
        ("1002", "appointment_reminder", "", ("Ms Weber", "Monday 10:00")),
        ("1001", "conversation_reopen", "", ()),
    ],
)
async def test_approved_templates_with_their_parameters_pass(
    stack: Stack, account: str, name: str, language: str, params: tuple[str, ...]
) -> None:
    chat, _ = stack.connector.outreach_chat("+49 155 5123 4567", account)
    await stack.connector.check_template(chat, name, language, params)


async def test_an_unknown_template_names_the_approved_ones_of_that_language(stack: Stack) -> None:
    chat, _ = stack.connector.outreach_chat(CLIENT, None)
    assert await refused(stack.connector.check_template(chat, "folow_up", "", ("Ms Weber",))) == (
        "There is no template “folow_up”; the approved templates in en are: "
        "appointment_reminder, conversation_reopen, follow_up, welcome_offer."
    )
    assert await refused(stack.connector.check_template(chat, "folow_up", "fr", ())) == (
        "There is no template “folow_up”; the approved templates in fr are: none."
    )


async def test_a_template_in_another_language_names_the_languages_it_exists_in(stack: Stack) -> None:
    chat, _ = stack.connector.outreach_chat(CLIENT, "support")
    assert await refused(stack.connector.check_template(chat, "follow_up", "fr", ("Mme Weber",))) == (
        "Template “follow_up” does not exist in fr; it exists in: de, en. Give the language with --lang, e.g. --lang de."
    )
    assert await refused(stack.connector.check_template(chat, "appointment_reminder", "de", ("a", "b"))) == (
        "Template “appointment_reminder” does not exist in de; it exists in: en. Give the language with --lang, e.g. --lang en."
    )


@pytest.mark.parametrize(
    ("name", "status", "why"),
    [
        ("order_update", "PENDING", "WhatsApp is still reviewing it"),
        ("spring_promo", "REJECTED", "WhatsApp rejected it; edit it and submit it again in WhatsApp Manager"),
        ("old_offer", "PAUSED", "WhatsApp paused it after clients' negative feedback"),
        ("retired", "DISABLED", "WhatsApp disabled it"),
    ],
)
async def test_a_template_not_approved_says_its_status(
    stack: Stack, name: str, status: str, why: str
) -> None:
    chat, _ = stack.connector.outreach_chat(CLIENT, None)
    assert await refused(stack.connector.check_template(chat, name, "", ("x",))) == (
        f"Template “{name}” (en) cannot be sent: its status is {status} ({why}); WhatsApp sends only approved templates."
    )


@pytest.mark.parametrize(
    ("name", "params", "reason"),
    [
        ("follow_up", (), f"Template “follow_up” takes 1 parameter(s), 0 given: “{FOLLOW_UP_TEXT}”"),
        (
            "follow_up",
            ("Ms", "Weber"),
            f"Template “follow_up” takes 1 parameter(s), 2 given: “{FOLLOW_UP_TEXT}”",
        ),
        (
            "appointment_reminder",
            ("Ms Weber",),
            "Template “appointment_reminder” takes 2 parameter(s), 1 given: “Hello {{1}}, "
            "this is a reminder of your appointment on {{2}}. Reply to confirm or reschedule.”",
        ),
        (
            "conversation_reopen",
            ("Ms Weber",),
            "Template “conversation_reopen” takes 0 parameter(s), 1 given: “We have an update "
            "for you. Reply to this message to continue the conversation.”",
        ),
    ],
)
async def test_a_wrong_parameter_count_shows_the_template_text(
    stack: Stack, name: str, params: tuple[str, ...], reason: str
) -> None:
    chat, _ = stack.connector.outreach_chat(CLIENT, None)
    assert await refused(stack.connector.check_template(chat, name, "", params)) == reason


async def test_what_the_check_passes_whatsapp_sends_and_what_it_refuses_whatsapp_refuses(
    stack: Stack,
) -> None:
    """The counts agree with the sandbox's own check of a send (``_template()`` sends body
    parameters only): a passing check sends, a refused count is refused by WhatsApp too."""
    chat, _ = stack.connector.outreach_chat("+49 155 000 1111", None)
    await stack.connector.check_template(chat, "appointment_reminder", "", ("Ms Weber", "Monday"))
    sent = await stack.connector.send(
        Delivery(
            DeliveryKind.TEMPLATE,
            chat,
            "!r:l",
            "$ok",
            template="appointment_reminder",
            template_params=("Ms Weber", "Monday"),
        )
    )
    assert len(sent.message_ids) == 1
    with pytest.raises(DeliveryError, match="refused the template"):
        await stack.connector.send(
            Delivery(
                DeliveryKind.TEMPLATE,
                chat,
                "!r:l",
                "$bad",
                template="appointment_reminder",
                template_params=("Ms Weber",),
            )
        )


async def test_header_parameters_the_command_cannot_give_are_refused(stack: Stack) -> None:
    chat, _ = stack.connector.outreach_chat(CLIENT, None)
    assert await refused(stack.connector.check_template(chat, "welcome_offer", "", ("Ms Weber",))) == (
        "Template “welcome_offer” needs 1 header parameter(s), which the contact command cannot give "
        "(it fills the body's placeholders only); use a template without header placeholders."
    )


async def test_an_empty_parameter_is_refused(stack: Stack) -> None:
    chat, _ = stack.connector.outreach_chat(CLIENT, None)
    assert await refused(stack.connector.check_template(chat, "follow_up", "", ("  ",))) == (
        "Parameter 1 of template “follow_up” is empty; WhatsApp refuses empty parameters."
    )


async def test_a_template_approved_since_the_last_check_is_accepted_at_once(stack: Stack) -> None:
    """Passing checks may answer from a short-lived cache; refusals ask WhatsApp again."""
    chat, _ = stack.connector.outreach_chat(CLIENT, None)
    assert "status is PENDING" in await refused(
        stack.connector.check_template(chat, "launch_notice", "", ("9:00",))
    )
    catalog = stack.sandbox.catalog.templates
    index = next(i for i, t in enumerate(catalog) if t.name == "launch_notice")
    catalog[index] = dataclasses.replace(catalog[index], status="APPROVED")
    await stack.connector.check_template(chat, "launch_notice", "", ("9:00",))


async def test_a_graph_error_says_the_templates_could_not_be_checked(
    stack: Stack, spare: WhatsAppConnector
) -> None:
    chat, _ = spare.outreach_chat(CLIENT, None)
    await control(
        stack.sandbox,
        "POST",
        "/control/faults",
        {"path": "templates", "count": 1, "status": 500, "code": 131000},
    )
    reason = await refused(spare.check_template(chat, "follow_up", "", ("Ms Weber",)))
    assert reason.startswith(
        "The message templates could not be checked (WhatsApp answered HTTP 500 code 131000"
    )
    assert reason.endswith("); try again in a moment.")
    await spare.check_template(chat, "follow_up", "", ("Ms Weber",))  # trying again works


async def test_an_unreachable_graph_says_so_and_to_try_again() -> None:
    connector = WhatsAppConnector(wa_config(f"http://127.0.0.1:{free_port()}/v21.0"))
    await connector.start(Inbound())
    try:
        chat, _ = connector.outreach_chat(CLIENT, None)
        assert await refused(connector.check_template(chat, "follow_up", "", ("Ms Weber",))) == (
            "The message templates could not be checked (WhatsApp could not be reached); try again in a moment."
        )
    finally:
        await connector.stop()


async def test_a_number_without_its_business_account_id_cannot_check_templates(stack: Stack) -> None:
    connector = WhatsAppConnector(
        wa_config(stack.sandbox.graph_url, (WhatsAppNumber("1001", TOKEN, "", "Sales"),))
    )
    await connector.start(Inbound())
    try:
        chat, _ = connector.outreach_chat(CLIENT, None)
        assert await refused(connector.check_template(chat, "follow_up", "", ("Ms Weber",))) == (
            "The templates of WhatsApp number Sales (+15550100, id 1001) cannot be checked: an admin must set its waba_id "
            "(networks.whatsapp.numbers[].waba_id, the WhatsApp Business Account id in WhatsApp Manager)."
        )
    finally:
        await connector.stop()


# --------------------------------------------------------------------------- the window


def text(chat: ChatRef, body: str, event_id: str) -> Delivery:
    return Delivery(
        DeliveryKind.MESSAGE,
        chat,
        "!portal:example.org",
        event_id,
        signature="Jane (Example Advisers)",
        text=RichText(body),
    )


async def test_free_text_before_the_client_answers_is_refused_and_their_answer_opens_the_same_chat(
    stack: Stack,
) -> None:
    connector, sandbox = stack.connector, stack.sandbox
    chat, _ = connector.outreach_chat("+49 155 5123 4567", "Support")
    await connector.check_template(chat, "follow_up", "", ("Ms Weber",))
    receipt = await connector.send(
        Delivery(
            DeliveryKind.TEMPLATE,
            chat,
            "!portal:example.org",
            "$template",
            template="follow_up",
            template_params=("Ms Weber",),
        )
    )
    # The core records the template as an outbound message: it opens no window.
    await stack.store.add_message(
        MessageLink(
            "whatsapp",
            chat.account,
            chat.chat_id,
            receipt.message_ids[0],
            "!portal:example.org",
            "$template",
            "out",
        )
    )
    assert await stack.store.last_inbound_at(chat) is None

    with pytest.raises(DeliveryError) as caught:
        await connector.send(text(chat, "Did you get our letter?", "$early"))
    assert caught.value.permanent
    assert caught.value.reason == (
        "the client last wrote more than 24 hours ago (or never), and WhatsApp then accepts only approved message "
        "templates from a business; send one with the bot's template command, e.g. !hl template <name> [parameters]"
    )
    phone = await control(sandbox, "GET", f"/client/{CLIENT}/messages?to=1002")
    assert [m["type"] for m in phone["messages"]] == ["template"]  # refused before it was sent

    client = WhatsAppClient(sandbox.url, CLIENT, "Anna Weber", to="1002")
    answer = await client.say("Yes, thank you")
    event = await stack.inbound.wait_for(lambda e: e.message_id == answer)
    assert event.kind is RemoteEventKind.MESSAGE and event.chat == chat  # the outreach's room

    await connector.send(text(chat, "Did you get our letter?", "$later"))
    phone = await control(sandbox, "GET", f"/client/{CLIENT}/messages?to=1002")
    assert [m["type"] for m in phone["messages"]] == ["template", "text"]


async def test_a_restarted_connector_refuses_free_text_to_a_client_who_never_wrote(stack: Stack) -> None:
    """After a restart the connector knows only the record; an outreach-only chat has no inbound."""
    connector = WhatsAppConnector(
        wa_config(stack.sandbox.graph_url), last_inbound=stack.store.last_inbound_at
    )
    await connector.start(Inbound())
    try:
        chat, _ = connector.outreach_chat("+44 7700 900123", None)
        with pytest.raises(
            DeliveryError, match=r"^the client last wrote more than 24 hours ago \(or never\)"
        ):
            await connector.send(text(chat, "Hello?", "$cold"))
        phone = await control(stack.sandbox, "GET", "/client/447700900123/messages?to=1001")
        assert phone["messages"] == []
    finally:
        await connector.stop()


# --------------------------------------------------------------------------- a paged template list


async def test_templates_on_later_pages_are_found_and_the_token_stays_on_the_graph_host() -> None:
    """The sandbox lists every template on one page; Meta pages them (``paging.next``). A
    stand-in Graph with three pages, the last link pointing elsewhere."""
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.query_string)
        base = f"http://127.0.0.1:{request.url.port}/v21.0/{WABA}/message_templates"
        if "after" not in request.query:
            return web.json_response(
                {
                    "data": [{"name": "a", "language": "en", "status": "APPROVED"}],
                    "paging": {"next": f"{base}?limit=250&after=P2"},
                }
            )
        return web.json_response(
            {
                "data": [
                    {
                        "name": "follow_up",
                        "language": "en",
                        "status": "APPROVED",
                        "components": [{"type": "BODY", "text": FOLLOW_UP_TEXT}],
                    }
                ],
                "paging": {"next": "http://graph.example.invalid/next?after=P3"},
            }
        )

    app = web.Application()
    app.router.add_get(f"/v21.0/{WABA}/message_templates", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    connector = WhatsAppConnector(
        wa_config(f"http://127.0.0.1:{port}/v21.0", (WhatsAppNumber("1001", TOKEN, WABA, "Sales"),))
    )
    await connector.start(Inbound())
    try:
        chat, _ = connector.outreach_chat(CLIENT, None)
        await connector.check_template(chat, "follow_up", "", ("Ms Weber",))
        assert seen == ["limit=250", "limit=250&after=P2"]
    finally:
        await connector.stop()
        await runner.cleanup()
