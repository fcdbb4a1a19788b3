"""The appservice registration file the homeserver loads.

Tokens are random and kept across regenerations, so a homeserver that already loaded the file
does not have to be reconfigured when the namespaces or address change.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml


class RegistrationError(Exception):
    """The registration file is missing or malformed."""


@dataclass(frozen=True)
class Registration:
    id: str
    url: str
    as_token: str
    hs_token: str
    sender_localpart: str
    user_regexes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "url": self.url,
            "as_token": self.as_token,
            "hs_token": self.hs_token,
            "sender_localpart": self.sender_localpart,
            "rate_limited": False,
            "namespaces": {
                "users": [{"exclusive": True, "regex": r} for r in self.user_regexes],
                "aliases": [],
                "rooms": [],
            },
            # Typing notifications and read receipts (MSC2409): employees typing shows as
            # "typing..." to the client.
            "de.sorunome.msc2409.push_ephemeral": True,
            "receive_ephemeral": True,
        }


def new_token() -> str:
    """64 characters from a CSPRNG: far past guessing, and safe in URLs and headers."""
    return secrets.token_urlsafe(48)


def build_registration(
    *, as_id: str, url: str, bot_localpart: str, domain: str, ghost_regex: str, existing: Path | None = None
) -> Registration:
    """A registration for this config, reusing the tokens of ``existing`` when it can be read."""
    as_token, hs_token = new_token(), new_token()
    if existing is not None and existing.exists():
        try:
            old = load_registration(existing)
            as_token, hs_token = old.as_token, old.hs_token
        except RegistrationError:
            pass  # unreadable or placeholder tokens are replaced, never kept
    bot_regex = "@" + re.escape(bot_localpart) + ":" + re.escape(domain)
    return Registration(
        id=as_id,
        url=url,
        as_token=as_token,
        hs_token=hs_token,
        sender_localpart=bot_localpart,
        user_regexes=(bot_regex, ghost_regex),
    )


def write_registration(reg: Registration, path: Path) -> None:
    """Write with mode 0600: the file holds both tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# Written by 'houseline generate-registration'. Give this file to the homeserver\n")
        f.write("# (Synapse: app_service_config_files). It holds secrets: keep it private.\n")
        yaml.safe_dump(reg.to_dict(), f, sort_keys=False)
    os.replace(tmp, path)


def load_registration(path: Path) -> Registration:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistrationError(
            f"{path}: not found; create it with 'houseline generate-registration -c config.yaml -o {path}'"
        ) from None
    except yaml.YAMLError as e:
        raise RegistrationError(f"{path}: not valid YAML ({e}); regenerate it") from None
    if not isinstance(data, dict):
        raise RegistrationError(f"{path}: expected a mapping; regenerate it")
    problems = [
        f"{path}: {key} missing or not text; regenerate the file"
        for key in ("id", "url", "as_token", "hs_token", "sender_localpart")
        if not isinstance(data.get(key), str) or not data.get(key)
    ]
    for key in ("as_token", "hs_token"):
        token = data.get(key)
        if isinstance(token, str) and (
            "REPLACE" in token
            or len(token) < 32
            or not token.isascii()
            or not token.isprintable()
            or " " in token
        ):
            problems.append(
                f"{path}: {key} is a placeholder or too weak (at least 32 printable ASCII characters); "
                "delete the file and run 'houseline generate-registration' for new random tokens"
            )
    if problems:
        raise RegistrationError("; ".join(problems))
    users = data.get("namespaces", {}).get("users", []) if isinstance(data.get("namespaces"), dict) else []
    return Registration(
        id=data["id"],
        url=data["url"],
        as_token=data["as_token"],
        hs_token=data["hs_token"],
        sender_localpart=data["sender_localpart"],
        user_regexes=tuple(u["regex"] for u in users if isinstance(u, dict) and "regex" in u),
    )
