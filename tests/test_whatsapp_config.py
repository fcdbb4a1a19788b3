"""networks.whatsapp: every problem names its key path and the fix; secrets stay out of repr."""

from __future__ import annotations

import copy

import pytest

from bridge.config import ConfigError, parse_config
from tests.test_config import minimal

SECRET = "s3cr3t-" + "x" * 20
TOKEN = "EAAG" + "t" * 40


def with_whatsapp(**section) -> dict:
    data = minimal()
    data["networks"]["whatsapp"] = {
        "enabled": True,
        "app_secret": SECRET,
        "verify_token": SECRET + "v",
        "numbers": [
            {"phone_number_id": "106540352242922", "access_token": TOKEN, "waba_id": "102290129340398"}
        ],
        **section,
    }
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_a_valid_section_is_parsed_with_documented_defaults() -> None:
    config = parse_config(with_whatsapp())
    wa = config.network("whatsapp")
    assert wa is not None
    assert wa.graph_url == "https://graph.facebook.com/v21.0"
    assert (wa.listen_host, wa.listen_port, wa.path, wa.default_language) == (
        "127.0.0.1",
        29342,
        "/whatsapp/webhook",
        "en",
    )
    assert wa.number("106540352242922").waba_id == "102290129340398"
    text = repr(config)
    assert SECRET not in text and TOKEN not in text
    bot_token = config.network("telegram").bot_token
    assert set(config.network_secrets()) == {SECRET, SECRET + "v", TOKEN, bot_token}


def test_disabled_or_absent_means_no_connector() -> None:
    assert parse_config(minimal()).network("whatsapp") is None
    data = with_whatsapp(enabled=False, app_secret="REPLACE-ME")
    assert parse_config(data).network("whatsapp") is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"app_secret": "REPLACE-WITH-THE-APP-SECRET"},
            "networks.whatsapp.app_secret: still the placeholder",
        ),
        ({"app_secret": ""}, "networks.whatsapp.app_secret: missing; set it to the App Secret"),
        ({"verify_token": "short"}, "networks.whatsapp.verify_token: too short"),
        ({"numbers": []}, "networks.whatsapp.numbers: empty; list the company's WhatsApp numbers"),
        (
            {"numbers": [{"phone_number_id": "+1 555", "access_token": TOKEN}]},
            "networks.whatsapp.numbers[0].phone_number_id: '+1 555' is not a phone number id",
        ),
        (
            {
                "numbers": [
                    {"phone_number_id": "1", "access_token": TOKEN},
                    {"phone_number_id": "1", "access_token": TOKEN},
                ]
            },
            "networks.whatsapp.numbers[1].phone_number_id: 1 is listed twice",
        ),
        (
            {"numbers": [{"phone_number_id": "1", "access_token": "REPLACE-WITH-A-SYSTEM-USER-TOKEN"}]},
            "networks.whatsapp.numbers[0].access_token: still the placeholder",
        ),
        (
            {"numbers": [{"phone_number_id": "1", "access_token": TOKEN, "token": "x"}]},
            "networks.whatsapp.numbers[0].token: unknown key",
        ),
        (
            {"webhook": {"listen_port": 29340}},
            "networks.whatsapp.webhook.listen_port: 29340 is the appservice's port",
        ),
        ({"webhook": {"path": "whatsapp"}}, "networks.whatsapp.webhook.path: 'whatsapp' must start with '/'"),
        (
            {"graph_url": "graph.facebook.com"},
            "networks.whatsapp.graph_url: 'graph.facebook.com' is not a valid URL",
        ),
        ({"colour": "blue"}, "networks.whatsapp.colour: unknown key"),
    ],
)
def test_each_problem_names_its_key_path_and_the_fix(change: dict, expected: str) -> None:
    data = with_whatsapp(**copy.deepcopy(change))
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found
