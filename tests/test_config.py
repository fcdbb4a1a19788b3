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
    assert config.network("telegram").polling_timeout == 30
    assert config.network("telegram").pacing is True
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
        (
            lambda d: d["homeserver"].pop("url"),
            "homeserver.url: missing; set it to the client-server API URL",
        ),
        (
            lambda d: d["homeserver"].update(url="localhost:8008"),
            "homeserver.url: 'localhost:8008' is not a valid URL",
        ),
        (
            lambda d: d["homeserver"].update(domain="https://example.com"),
            "homeserver.domain: 'https://example.com' is not a server name",
        ),
        (lambda d: d.update(appservice={"port": 70000}), "appservice.port: 70000 is out of range"),
        (lambda d: d.update(appservice={"port": "80"}), "appservice.port: expected a whole number"),
        (
            lambda d: d.update(appservice={"bot_localpart": "Bot"}),
            "appservice.bot_localpart: 'Bot' is not a valid Matrix localpart",
        ),
        (
            lambda d: d.update(appservice={"ghost_localpart_template": "tg_{user}"}),
            "appservice.ghost_localpart_template: 'tg_{user}' must contain {id}",
        ),
        (
            lambda d: d.update(appservice={"ghost_localpart_template": "{id}", "bot_localpart": "houseline"}),
            "appservice.ghost_localpart_template: the bot's localpart would fall inside",
        ),
        (
            lambda d: d["networks"]["telegram"].update(bot_token="nope"),
            "networks.telegram.bot_token: does not look like a bot token",
        ),
        (
            lambda d: d["networks"]["telegram"].pop("bot_token"),
            "networks.telegram.bot_token: missing; set it to the token @BotFather",
        ),
        (
            lambda d: d["networks"]["telegram"].update(polling={"timeout": 99}),
            "networks.telegram.polling.timeout: 99 is out of range",
        ),
        (
            lambda d: d["networks"]["telegram"].update(pacing="off"),
            "networks.telegram.pacing: expected true or false, got the text 'off'; write true or false (no quotes)",
        ),
        (lambda d: d["networks"].update(signal={}), "networks.signal: unknown network; supported: telegram"),
        (
            lambda d: d["portals"].update(invite=["alice"]),
            "portals.invite[0]: 'alice' is not a Matrix user id",
        ),
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
    assert [p.split(":")[0] for p in problems] == [
        "homeserver.domain",
        "networks.telegram.bot_token",
        "portals.invite[0]",
    ]


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


# --------------------------------------------------------------------------- networks.telegram.webhook

SECRET = "s3cr3t-Token_" + "x" * 30


def with_webhook(**keys) -> dict:
    data = minimal()
    data["networks"]["telegram"]["webhook"] = {
        "enabled": True,
        "public_url": "https://bridge.example.com/telegram/webhook",
        "secret_token": SECRET,
        **keys,
    }
    return data


def test_webhook_is_off_unless_enabled() -> None:
    assert parse_config(minimal()).network("telegram").webhook is None
    data = with_webhook(enabled=False)
    assert parse_config(data).network("telegram").webhook is None
    data["networks"]["telegram"]["webhook"] = {"enabled": False}  # no secret needed when off
    assert parse_config(data).network("telegram").webhook is None


def test_webhook_takes_documented_defaults_and_hides_the_secret() -> None:
    webhook = parse_config(with_webhook()).network("telegram").webhook
    assert webhook is not None
    assert webhook.public_url == "https://bridge.example.com/telegram/webhook"
    assert (webhook.listen_host, webhook.listen_port, webhook.path) == (
        "127.0.0.1",
        29341,
        "/telegram/webhook",
    )
    assert webhook.secret_token == SECRET
    assert SECRET not in repr(webhook) and SECRET not in repr(parse_config(with_webhook()))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/telegram/webhook",
        "http://localhost:40123/hook",
        "https://bridge.example.com:8443/telegram/webhook",
        "https://bridge.example.com:88/x",
        "https://203.0.113.7/telegram/webhook",
    ],
)
def test_webhook_accepts_https_and_local_http(url: str) -> None:
    assert parse_config(with_webhook(public_url=url)).network("telegram").webhook.public_url == url


def test_webhook_keys_are_checked_even_when_disabled() -> None:
    problems = problems_for(
        with_webhook(enabled=False, path="hook", public_url="http://bridge.example.com/x")
    )
    assert [p.split(":")[0] for p in problems] == [
        "networks.telegram.webhook.public_url",
        "networks.telegram.webhook.path",
    ]


W = "networks.telegram.webhook"
SECRET_FIX = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {"secret_token": None},
            f"{W}.secret_token: missing; it is required with enabled: true; {SECRET_FIX}",
        ),
        ({"secret_token": "not a secret!"}, f"{W}.secret_token: has characters other than A-Z a-z 0-9 _ -"),
        (
            {"secret_token": "a" * 257},
            f"{W}.secret_token: is 257 characters long; Telegram's setWebhook accepts 1 to 256",
        ),
        ({"secret_token": "REPLACE-WITH-A-GENERATED-SECRET"}, f"{W}.secret_token: still the placeholder"),
        (
            {"public_url": None},
            f"{W}.public_url: missing; set it to the https URL Telegram should POST updates to",
        ),
        (
            {"public_url": "http://bridge.example.com/telegram/webhook"},
            f"{W}.public_url: 'http://bridge.example.com/telegram/webhook' is plain http; Telegram only POSTs to https",
        ),
        (
            {"public_url": "https://bridge.example.com:8080/telegram/webhook"},
            f"{W}.public_url: port 8080 is not one Telegram delivers to; use 443, 80, 88 or 8443",
        ),
        (
            {"public_url": "https://bridge.example.com:99999/x"},
            f"{W}.public_url: 'https://bridge.example.com:99999/x' has an invalid port",
        ),
        (
            {"public_url": "bridge.example.com/telegram/webhook"},
            f"{W}.public_url: 'bridge.example.com/telegram/webhook' is not a valid URL; write it as https://",
        ),
        (
            {"public_url": "ftp://bridge.example.com/x"},
            f"{W}.public_url: 'ftp://bridge.example.com/x' is not a valid URL",
        ),
        (
            {"listen_port": 29340},
            f"{W}.listen_port: 29340 is also appservice.port; the webhook needs a port of its own, e.g. 29341",
        ),
        ({"listen_port": 0}, f"{W}.listen_port: 0 is out of range"),
        ({"listen_port": "29341"}, f"{W}.listen_port: expected a whole number"),
        ({"path": "telegram/webhook"}, f"{W}.path: 'telegram/webhook' must start with '/'"),
        ({"path": "/hook/{id}"}, f"{W}.path: '/hook/{{id}}' may use only letters, digits and / . _ ~ -"),
        ({"enabled": "yes"}, f"{W}.enabled: expected true or false"),
        (
            {"secret": SECRET},
            f"{W}.secret: unknown key; did you mean 'secret_token'? the allowed keys are enabled, public_url, "
            "listen_host, listen_port, path, secret_token",
        ),
    ],
)
def test_each_webhook_problem_names_key_path_and_fix(keys: dict, expected: str) -> None:
    data = with_webhook(**keys)
    problems = problems_for(data)
    assert any(p.startswith(expected) for p in problems), problems
    assert not any(SECRET in p or "not a secret!" in p or "a" * 257 in p for p in problems)


def test_webhook_listen_port_is_checked_against_a_changed_appservice_port() -> None:
    data = with_webhook(listen_port=8000)
    data["appservice"] = {"port": 8000}
    assert any(p.startswith(f"{W}.listen_port: 8000 is also appservice.port") for p in problems_for(data))
    data["appservice"] = {"port": 29341}
    data["networks"]["telegram"]["webhook"].pop("listen_port")
    assert any(p.startswith(f"{W}.listen_port: 29341 is also appservice.port") for p in problems_for(data))


def test_webhook_that_is_not_a_mapping_is_one_problem() -> None:
    data = minimal()
    data["networks"]["telegram"]["webhook"] = True
    assert problems_for(data) == [
        f"{W}: expected a mapping of keys, got true (true/false); write the webhook keys indented under "
        "'webhook:' (see config.example.yaml), or leave it out for long polling"
    ]


def test_example_webhook_block_documents_the_defaults() -> None:
    """The commented-out block in config.example.yaml, uncommented, is a valid config whose
    values are the parser's defaults, so the documentation cannot drift from the code."""
    lines = (ROOT / "config.example.yaml").read_text().splitlines()
    start = lines.index("    # webhook:")
    block = []
    for line in lines[start:]:
        if not line.startswith("    # "):
            break
        block.append(line[len("    # ") :])
    documented = yaml.safe_load("\n".join(block))["webhook"]
    assert set(documented) == {"enabled", "public_url", "listen_host", "listen_port", "path", "secret_token"}
    assert documented["enabled"] is False
    data = minimal()
    data["networks"]["telegram"]["webhook"] = dict(documented, enabled=True)
    assert problems_for(data) == [
        f"{W}.secret_token: still the placeholder from config.example.yaml; {SECRET_FIX}"
    ]
    documented.update(enabled=True, secret_token=SECRET)
    data["networks"]["telegram"]["webhook"] = documented
    webhook = parse_config(data).network("telegram").webhook
    defaults = parse_config(with_webhook()).network("telegram").webhook
    assert webhook == defaults


def _key_paths(node, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    paths = set()
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        paths.add(path)
        if key not in ("roles", "teams", "networks", "regions", "account_owners"):
            paths |= _key_paths(value, path)
    return paths


def test_config_example_documents_every_policy_key_of_the_example_policy() -> None:
    inline = yaml.safe_load((ROOT / "config.example.yaml").read_text())["policies"]
    standalone = yaml.safe_load((ROOT / "policies" / "example.yaml").read_text())
    assert _key_paths(inline) == _key_paths(standalone)


def test_policy_problems_name_their_path_under_policies(tmp_path: Path) -> None:
    data = minimal()
    data["policies"] = {
        "sharing": {"custom_patterns": [{"name": "x", "regex": "(unclosed"}]},
        "admins": ["bob"],
    }
    problems = problems_for(data)
    assert any(p.startswith("policies.sharing.custom_patterns[0].regex:") for p in problems), problems
    assert any(p.startswith("policies.admins[0]:") for p in problems), problems
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("join: {max_external: -1}\n")
    data["policies"] = {"file": str(policy_file)}
    assert any(p.startswith("policies.file") and "join.max_external" in p for p in problems_for(data))


def test_a_network_whose_library_is_missing_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import bridge.networks
    from bridge.networks.telegram import SPEC

    without = dataclasses.replace(SPEC, requires=(("telegram_library_not_installed",), "telegram"))
    monkeypatch.setitem(bridge.networks._SPECS, "telegram", without)
    assert problems_for(minimal()) == [
        "networks.telegram: the Telegram library is not installed (no module telegram_library_not_installed); "
        "install it with: pip install 'houseline[telegram]' (or set networks.telegram.enabled: false)"
    ]
    data = minimal()
    data["networks"]["telegram"]["enabled"] = False
    assert parse_config(data).networks == {}
