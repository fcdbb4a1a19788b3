"""networks.line: every problem names its key path and the fix; secrets stay out of repr and
out of the problems; the defaults are the documented ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import ConfigError, parse_config
from bridge.networks import network_names, register, unregister
from bridge.networks.line import SPEC
from bridge.networks.line.config import LineConfig, parse_line
from bridge.networks.spec import ConfigContext
from policies.reader import ConfigReader
from tests.test_config import minimal

SECRET = "0123456789abcdef0123456789abcdef"
TOKEN = "lineChannelAccessToken" + "x" * 40 + "="


@pytest.fixture
def line_registered() -> Iterator[None]:
    """The registry line is someone else's change: register for the test, and remove it only
    if this fixture added it."""
    added = "line" not in network_names()
    if added:
        register(SPEC)
    yield
    if added:
        unregister("line")


def section(**keys: object) -> dict:
    return {"enabled": True, "channel_secret": SECRET, "channel_access_token": TOKEN, **keys}


def parse(line: object, appservice_port: int | None = 29340) -> tuple[LineConfig | None, list[str]]:
    reader = ConfigReader({"networks": {"line": line}})
    config = parse_line(reader, ConfigContext(appservice_port=appservice_port, base=Path(".")))
    return config, reader.problems


def test_a_valid_section_takes_the_documented_defaults() -> None:
    config, problems = parse(section())
    assert problems == []
    assert config is not None
    assert (config.api_url, config.data_url) == ("https://api.line.me", "https://api-data.line.me")
    assert (config.listen_host, config.listen_port, config.path, config.media_path) == (
        "127.0.0.1",
        29343,
        "/line/webhook",
        "/line/media",
    )
    assert config.public_url == "" and config.media_base == ""
    assert config.secrets() == (SECRET, TOKEN)


def test_secrets_stay_out_of_repr() -> None:
    config, _ = parse(section(webhook={"public_url": "https://bridge.example.com/line/webhook"}))
    text = repr(config)
    assert SECRET not in text and TOKEN not in text
    assert "bridge.example.com" in text


def test_media_are_served_under_the_public_urls_origin() -> None:
    config, problems = parse(
        section(
            webhook={"public_url": "https://bridge.example.com:8443/hooks/line", "media_path": "/files/line/"}
        )
    )
    assert problems == []
    assert config is not None and config.media_base == "https://bridge.example.com:8443/files/line"


def test_absent_or_disabled_means_no_connector_and_placeholders_are_fine_while_off() -> None:
    assert parse(None) == (None, [])
    config, problems = parse(
        {"enabled": False, "channel_secret": "REPLACE-ME", "channel_access_token": "REPLACE"}
    )
    assert config is None and problems == []
    # LINE is off by default.
    config, problems = parse({"channel_secret": SECRET, "channel_access_token": TOKEN})
    assert config is None and problems == []


def test_keys_are_checked_even_while_disabled() -> None:
    _, problems = parse({"enabled": False, "webhok": {}, "webhook": {"listen_port": "many"}})
    assert any(p.startswith("networks.line.webhok: unknown key; did you mean 'webhook'?") for p in problems)
    assert any(p.startswith("networks.line.webhook.listen_port: expected a whole number") for p in problems)


@pytest.mark.parametrize(
    ("keys", "path", "words"),
    [
        ({"channel_secret": ""}, "networks.line.channel_secret", "missing; set it to the Channel secret"),
        (
            {"channel_secret": "REPLACE-WITH-THE-SECRET"},
            "networks.line.channel_secret",
            "still the placeholder",
        ),
        ({"channel_secret": "short"}, "networks.line.channel_secret", "does not look like"),
        ({"channel_access_token": "REPLACE"}, "networks.line.channel_access_token", "still the placeholder"),
        ({"channel_access_token": "two words" + "x" * 20}, "networks.line.channel_access_token", "one word"),
        ({"api_url": "api.line.me"}, "networks.line.api_url", "is not a valid URL"),
        ({"data_url": "ftp://x"}, "networks.line.data_url", "is not a valid URL"),
        ({"enabled": "yes"}, "networks.line.enabled", "expected true or false"),
        ({"webhook": ["x"]}, "networks.line.webhook", "expected a mapping"),
        ({"webhook": {"listen_port": 29340}}, "networks.line.webhook.listen_port", "also appservice.port"),
        ({"webhook": {"listen_port": 0}}, "networks.line.webhook.listen_port", "out of range"),
        ({"webhook": {"path": "line/webhook"}}, "networks.line.webhook.path", "must start with '/'"),
        ({"webhook": {"path": "/line/{x}"}}, "networks.line.webhook.path", "may use only"),
        ({"webhook": {"media_path": "/line/webhook"}}, "networks.line.webhook.media_path", "overlaps"),
        ({"webhook": {"media_path": "/line"}}, "networks.line.webhook.media_path", "overlaps"),
        (
            {"webhook": {"public_url": "http://bridge.example.com/line/webhook"}},
            "networks.line.webhook.public_url",
            "plain http; LINE only delivers to https",
        ),
        (
            {"webhook": {"public_url": "https://bridge.example.com/line/webhook?x=1"}},
            "networks.line.webhook.public_url",
            "query",
        ),
        (
            {"webhook": {"public_url": "https://bridge.example.com/" + "a" * 500}},
            "networks.line.webhook.public_url",
            "at most 500",
        ),
        (
            {"webhook": {"public_url": "https://bridge.example.com:port/"}},
            "networks.line.webhook.public_url",
            "port",
        ),
        (
            {"webhook": {"listen_hots": "0.0.0.0"}},
            "networks.line.webhook.listen_hots",
            "did you mean 'listen_host'",
        ),
    ],
)
def test_each_problem_names_its_key_and_the_fix(keys: dict, path: str, words: str) -> None:
    config, problems = parse(section(**keys))
    assert config is None
    assert any(p.startswith(f"{path}: ") and words in p for p in problems), problems


def test_http_is_allowed_for_the_local_emulator_only() -> None:
    for url in ("http://127.0.0.1:9000/line/webhook", "http://localhost/line/webhook"):
        config, problems = parse(section(webhook={"public_url": url}))
        assert problems == [] and config is not None and config.public_url == url


def test_a_secret_is_never_echoed_in_a_problem() -> None:
    _, problems = parse(section(channel_secret=1234567890123456789, channel_access_token="tok en" * 5))
    assert problems
    assert not any("1234567890123456789" in p or "tok en" in p for p in problems)


def test_the_section_is_read_through_the_bridge_config(line_registered: None) -> None:
    data = minimal()
    data["networks"]["line"] = section(webhook={"public_url": "https://bridge.example.com/line/webhook"})
    config = parse_config(data)
    line = config.network("line")
    assert isinstance(line, LineConfig)
    assert {SECRET, TOKEN} <= set(config.network_secrets())
    assert SECRET not in repr(config) and TOKEN not in repr(config)
    data["networks"]["line"] = section(channel_secret="REPLACE-ME")
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert any(
        p.startswith("networks.line.channel_secret: still the placeholder") for p in info.value.problems
    )
