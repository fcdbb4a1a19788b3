"""The WhatsApp payload translation never raises on hostile or odd payloads (a raise would make
Meta redeliver the payload for ever), and a malformed message becomes a visible UNSUPPORTED
event rather than vanishing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.events import RemoteEventKind
from bridge.networks.whatsapp.translate import Translator, failure_reason

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
TYPES = [
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "reaction",
    "edit",
    "revoke",
    "button",
    "interactive",
    "order",
    "unsupported",
    "nonsense",
]


async def _no_fetch(account: str, media_id: str) -> bytes:
    raise AssertionError("translation must not download")


def envelope(value: object) -> dict:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }


@settings(max_examples=600, deadline=None)
@given(json_values)
def test_any_value_translates_without_raising(value: object) -> None:
    Translator({"1001"}, _no_fetch).payload(envelope(value))


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(TYPES),
    st.dictionaries(
        st.sampled_from(TYPES + ["body", "caption", "emoji", "message_id", "context"]),
        json_values,
        max_size=5,
    ),
)
def test_any_message_of_any_type_becomes_an_event(kind: str, fields: dict) -> None:
    message = {"from": "4915", "id": "wamid.X", "timestamp": "1700000000", "type": kind, **fields}
    out = Translator({"1001"}, _no_fetch).payload(
        envelope({"metadata": {"phone_number_id": "1001"}, "messages": [message]})
    )
    assert len(out.events) == 1
    assert out.events[0].message_id == "wamid.X"


def test_a_malformed_text_is_said_not_dropped() -> None:
    message = {
        "from": "4915",
        "id": "wamid.Y",
        "timestamp": "1700000000",
        "type": "text",
        "text": "not an object",
    }
    out = Translator({"1001"}, _no_fetch).payload(
        envelope({"metadata": {"phone_number_id": "1001"}, "messages": [message]})
    )
    assert out.events[0].kind is RemoteEventKind.UNSUPPORTED and "could not read" in out.events[0].description


def test_payloads_for_numbers_not_configured_are_ignored() -> None:
    message = {
        "from": "4915",
        "id": "wamid.Z",
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": "hi"},
    }
    out = Translator({"1001"}, _no_fetch).payload(
        envelope({"metadata": {"phone_number_id": "9999"}, "messages": [message]})
    )
    assert out.events == []


def test_failed_statuses_are_explained_in_words() -> None:
    assert "24 hours" in failure_reason([{"code": 131047}])
    assert "error 999" in failure_reason(
        [{"code": 999, "error_data": {"details": "odd"}}]
    ) and "odd" in failure_reason([{"code": 999, "error_data": {"details": "odd"}}])
    assert "without a reason" in failure_reason(None)
