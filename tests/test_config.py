"""Config validation: every problem names its key path and the fix; exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"


def minimal() -> dict:
    return {
        "homeserver": {"url": "http://127.0.0.1:8008", "domain": "example.com"},
        "networks": {"telegram": {"bot_token": TOKEN}},
        "portals": {"company": "Acme", "invite": ["@alice:example.com"]},
    }


def problems_for(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_minimal_config_takes_documented_defaults() -> None:
    config = parse_config(minimal())
    assert config.appservice.port == 29340
    assert config.appservice.address == "http://127.0.0.1:29340"
    assert config.appservice.ghost_localpart_template == "{network}_{id}"
    assert config.database.url.startswith("sqlite:/") and config.database.url.endswith("houseline.db")
    assert config.portals.signature == "{displayname} ({company})"
    assert config.telegram.polling_timeout == 30
    assert config.bot_mxid == "@houseline:example.com"


def test_example_config_is_complete_and_only_the_placeholder_token_is_wrong() -> None:
    data = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    problems = problems_for(data)
    assert problems == [
        "networks.telegram.bot_token: still the placeholder from config.example.yaml; "
        "put the token @BotFather gave your company's bot here"
    ]
    data["networks"]["telegram"]["bot_token"] = TOKEN
    parse_config(data)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["homeserver"].pop("url"), "homeserver.url: missing; set it to the client-server API URL"),
        (lambda d: d["homeserver"].update(url="localhost:8008"), "homeserver.url: 'localhost:8008' is not a valid URL"),
        (lambda d: d["homeserver"].update(domain="https://example.com"), "homeserver.domain: 'https://example.com' is not a server name"),
        (lambda d: d.update(appservice={"port": 70000}), "appservice.port: 70000 is out of range"),
        (lambda d: d.update(appservice={"port": "80"}), "appservice.port: expected a whole number"),
        (lambda d: d.update(appservice={"bot_localpart": "Bot"}), "appservice.bot_localpart: 'Bot' is not a valid Matrix localpart"),
        (lambda d: d.update(appservice={"ghost_localpart_template": "tg_{user}"}), "appservice.ghost_localpart_template: 'tg_{user}' must contain {id}"),
        (lambda d: d.update(appservice={"ghost_localpart_template": "{id}", "bot_localpart": "houseline"}), "appservice.ghost_localpart_template: the bot's localpart would fall inside"),
        (lambda d: d["networks"]["telegram"].update(bot_token="nope"), "networks.telegram.bot_token: does not look like a bot token"),
        (lambda d: d["networks"]["telegram"].pop("bot_token"), "networks.telegram.bot_token: missing; set it to the token @BotFather"),
        (lambda d: d["networks"]["telegram"].update(polling={"timeout": 99}), "networks.telegram.polling.timeout: 99 is out of range"),
        (lambda d: d["networks"].update(signal={}), "networks.signal: unknown network; supported: telegram"),
        (lambda d: d["portals"].update(invite=["alice"]), "portals.invite[0]: 'alice' is not a Matrix user id"),
        (lambda d: d["portals"].update(signature="{name}"), "portals.signature: '{name}' may use only"),
        (lambda d: d["portals"].pop("company"), "portals.company: missing"),
        (lambda d: d.update(database={"url": "mysql://x"}), "database.url: unsupported scheme 'mysql'"),
        (lambda d: d.update(logging={"level": "LOUD"}), "logging.level: 'LOUD' is not a level"),
        (lambda d: d.update(extra=1), "extra: unknown section"),
        (lambda d: d.update(homeserver="http://x"), "homeserver: expected a mapping of keys"),
    ],
)
def test_each_problem_names_key_path_and_fix(change, expected: str) -> None:
    data = minimal()
    change(data)
    problems = problems_for(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    data = minimal()
    data["homeserver"].pop("domain")
    data["networks"]["telegram"]["bot_token"] = "x"
    data["portals"]["invite"] = ["bob"]
    problems = problems_for(data)
    assert [p.split(":")[0] for p in problems] == ["homeserver.domain", "networks.telegram.bot_token", "portals.invite[0]"]


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("homeserver:\n  url: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line" in info.value.problems[0] and "YAML" in info.value.problems[0]


def test_run_exits_2_before_touching_anything(tmp_path: Path) -> None:
    data = minimal()
    data["appservice"] = {"port": "not-a-port"}
    data["database"] = {"url": "sqlite:bridge.db"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "appservice.port: expected a whole number" in proc.stderr
    assert not (tmp_path / "bridge.db").exists()


def test_generate_registration_keeps_tokens(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    out = tmp_path / "registration.yaml"
    cmd = [sys.executable, "-m", "bridge", "generate-registration", "-c", str(path), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    first = yaml.safe_load(out.read_text())
    assert first["rate_limited"] is False
    assert len(first["as_token"]) >= 40 and first["as_token"] != first["hs_token"]
    assert all(ns["exclusive"] for ns in first["namespaces"]["users"])
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    second = yaml.safe_load(out.read_text())
    assert (second["as_token"], second["hs_token"]) == (first["as_token"], first["hs_token"])
